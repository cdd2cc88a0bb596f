/* rdv/svc/login.h — the "login" service of login-gate: whether a punch
 * request carries an acceptable login token (rendezvous.md §15.10). The
 * punch-coordinator asks it after the licence check when it is loaded. */
#ifndef RDV_SVC_LOGIN_H
#define RDV_SVC_LOGIN_H

#define RDV_SVC_LOGIN "login"
#define RDV_SVC_LOGIN_VERSION 1

typedef struct rdv_login_api {
    /* token: PunchHoleRequest.token ("" when absent). NULL = let the
     * request through; otherwise the text for PunchHoleResponse.other_failure,
     * which the client shows (valid until the next call). */
    const char *(*punch_refusal)(void *self, const char *token);
} rdv_login_api;

#endif
