/* admin_answers.h — how the admin socket's answers begin when the server
 * could not run the command: core/admin.c writes them, rdvctl exits 1 on
 * them. One place, so the two cannot drift apart. */
#ifndef RDV_ADMIN_ANSWERS_H
#define RDV_ADMIN_ANSWERS_H

#define RDV_ADMIN_UNKNOWN "unknown command '"
#define RDV_ADMIN_RELOAD_REFUSED "reload refused"

#endif
