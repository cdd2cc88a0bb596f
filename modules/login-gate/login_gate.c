/* login_gate.c — the "login" service (include/rdv/svc/login.h): with
 * must_login on, a PunchHoleRequest must carry a login token, and with a
 * jwt_key set that token must be a current HS256 JWT signed with it — the
 * login enforcement of rendezvous.md §15.10, as self-hosters know it from
 * the lejianwen server paired with rustdesk-api (MUST_LOGIN,
 * RUSTDESK_API_JWT_KEY, console command must-login/ml). The
 * punch-coordinator asks after its licence check and answers a refusal with
 * PunchHoleResponse{other_failure}, which the client shows. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <rdv/core.h>
#include <rdv/svc/login.h>

#include "login_jwt.h"

typedef struct lg_cfg {
    bool must_login;
    char *jwt_key;
    char *required_text;
    char *invalid_text;
    int64_t token_max;
} lg_cfg;

#define R RDV_SETF_RELOAD
static const rdv_setting lg_settings[] = {
    RDV_SETTING_BOOL(lg_cfg, must_login, 0, R,
                     "refuse PunchHoleRequest without a login token (MUST_LOGIN; console must-login/ml changes it until "
                     "the next reload)"),
    RDV_SETTING_STRING(lg_cfg, jwt_key, "", R | RDV_SETF_SECRET,
                       "when set, a token must be an HS256 JWT signed with this key whose exp is still ahead "
                       "(RUSTDESK_API_JWT_KEY, the key of the API server that issues them); empty: any token"),
    RDV_SETTING_STRING(lg_cfg, required_text, "Please log in to connect.", R,
                       "shown to a client that is not logged in"),
    RDV_SETTING_STRING(lg_cfg, invalid_text, "Your login is invalid or has expired: log out and log in again.", R,
                       "shown to a client whose token is refused"),
    RDV_SETTING_INT(lg_cfg, token_max, 8192, 16, 1048576, R, "longest token checked, bytes (longer ones are refused)"),
    RDV_SETTING_END,
};
#undef R

typedef struct lg {
    rdv_core *core;
    const lg_cfg *cfg;
    bool must_login; /* cfg->must_login, or what the console last set */
    struct {
        uint64_t *allowed, *no_token, *bad_token, *expired;
    } st;
} lg;

static const char *lg_punch_refusal(void *self, const char *token)
{
    lg *g = self;
    if (!g->must_login)
        return NULL;
    if (!token || !token[0]) {
        (*g->st.no_token)++;
        return g->cfg->required_text;
    }
    if (g->cfg->jwt_key[0]) {
        login_verdict v = strlen(token) > (size_t)g->cfg->token_max
                              ? LOGIN_MALFORMED
                              : login_jwt_check(token, g->cfg->jwt_key,
                                                (int64_t)(g->core->api->wall_us(g->core) / 1000000u));
        if (v != LOGIN_OK) {
            (*(v == LOGIN_EXPIRED ? g->st.expired : g->st.bad_token))++;
            RDV_LOG_RL(g->core, RDV_LOG_INFO, "punch request with a login token refused: %s", login_verdict_name(v));
            return g->cfg->invalid_text;
        }
    }
    (*g->st.allowed)++;
    return NULL;
}

static const rdv_login_api lg_api = { .punch_refusal = lg_punch_refusal };

/* must-login / ml [Y|N]: show or set, as the lejianwen hbbs console does. */
static void lg_cmd_must_login(void *ud, int argc, char **argv, rdv_buf *out)
{
    lg *g = ud;
    if (argc > 1) {
        g->must_login = strcasecmp(argv[1], "Y") == 0;
        RDV_NOTICE(g->core, "must_login set to %s from the console", g->must_login ? "true" : "false");
    }
    g->core->api->out(out, "MUST_LOGIN: %s\n", g->must_login ? "true" : "false");
}

static uint64_t lg_gauge_must_login(void *ud) { return ((lg *)ud)->must_login; }

static void lg_destroy(void *state) { free(state); }

static void lg_announce(lg *g)
{
    if (g->must_login)
        RDV_NOTICE(g->core, "login required for punch requests; tokens %s", g->cfg->jwt_key[0]
                                                                                 ? "checked as HS256 JWTs (jwt_key)"
                                                                                 : "not checked (jwt_key empty: any "
                                                                                   "non-empty token)");
}

static int lg_init(rdv_core *core, const void *cfg_, void **state)
{
    lg *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->core = core, g->cfg = cfg_, g->must_login = g->cfg->must_login;
    const rdv_core_api *api = core->api;
    g->st.allowed = api->counter(core, "allowed", "punch requests with an accepted login");
    g->st.no_token = api->counter(core, "refused_no_token", "punch requests refused: no login token");
    g->st.bad_token = api->counter(core, "refused_bad_token", "punch requests refused: token not valid for jwt_key");
    g->st.expired = api->counter(core, "refused_expired", "punch requests refused: token expired");
    int r = !g->st.allowed || !g->st.no_token || !g->st.bad_token || !g->st.expired ? -ENOMEM : 0;
    if (r == 0)
        r = api->gauge(core, "must_login", lg_gauge_must_login, g, "1 if punch requests need a login");
    if (r == 0)
        r = api->admin_command(core, "must-login", "[Y|N] show or set whether punch requests need a login",
                               lg_cmd_must_login, g);
    if (r == 0)
        r = api->admin_command(core, "ml", "= must-login", lg_cmd_must_login, g);
    if (r == 0)
        r = api->service_publish(core, RDV_SVC_LOGIN, RDV_SVC_LOGIN_VERSION, &lg_api, g);
    if (r < 0) {
        lg_destroy(g);
        return r;
    }
    lg_announce(g);
    *state = g;
    return 0;
}

static int lg_reconfigure(void *state, const void *cfg_)
{
    lg *g = state;
    g->cfg = cfg_;
    g->must_login = g->cfg->must_login; /* the file wins over a console change */
    lg_announce(g);
    return 0;
}

static const rdv_dep lg_provides[] = {
    { .name = RDV_SVC_LOGIN, .version = RDV_SVC_LOGIN_VERSION },
    { .name = NULL },
};

static const rdv_module lg_module = {
    RDV_MODULE_HEAD("login-gate", "1.0.0"),
    .description = "login enforcement for punch requests (MUST_LOGIN, HS256 tokens of rustdesk-api)",
    .settings = lg_settings,
    .config_size = sizeof(lg_cfg),
    .provides = lg_provides,
    .init = lg_init,
    .reconfigure = lg_reconfigure,
    .destroy = lg_destroy,
};
RDV_MODULE_EXPORT(lg_module)
