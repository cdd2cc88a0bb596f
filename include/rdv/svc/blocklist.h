/* rdv/svc/blocklist.h — the "blocklist" service of ip-blocker: decisions the
 * registry asks for (rendezvous.md §11.1) beyond the ACCESS phase. */
#ifndef RDV_SVC_BLOCKLIST_H
#define RDV_SVC_BLOCKLIST_H

#include "rdv/types.h"

#define RDV_SVC_BLOCKLIST "blocklist"
#define RDV_SVC_BLOCKLIST_VERSION 1

typedef struct rdv_blocklist_api {
    /* RegisterPk from ip for id: true = allowed (and counted), false =
     * answer TOO_FREQUENT (rendezvous.md §11.1). */
    bool (*register_pk_allowed)(void *self, const rdv_addr *ip, const char *id);
} rdv_blocklist_api;

#endif
