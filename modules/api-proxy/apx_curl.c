/* apx_curl.c — libcurl, loaded only when it is needed.
 *
 * libcurl brings ~30 shared libraries (OpenSSL, GnuTLS, Kerberos, LDAP,
 * SSH, RTMP, ...) whose pages made up ~8 of the 13 MiB a full node held at
 * idle (docs/BENCHMARKS.md). Most nodes never set api_base_url, so the
 * module does not link libcurl: it dlopens it the first time an API server
 * is configured (start-up or reload) and keeps it for the life of the
 * process (unloading libcurl and its TLS library is not safe). */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>

#include "apx.h"

#ifndef APX_LIBCURL
#define APX_LIBCURL "libcurl.so.4"
#endif

apx_curl_api apx_cu;
static bool apx_cu_loaded;
static char apx_cu_error[256];

int apx_curl_load(const char **err)
{
    if (apx_cu_loaded)
        return 0;
    void *h = dlopen(APX_LIBCURL, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(apx_cu_error, sizeof apx_cu_error, "cannot load %s: %s (install libcurl4)", APX_LIBCURL,
                 dlerror());
        *err = apx_cu_error;
        return -ENOENT;
    }
    apx_curl_api a;
    struct {
        void **slot;
        const char *name;
    } syms[] = {
#define APX_SYM(field, name) { (void **)&a.field, name }
        APX_SYM(global_init, "curl_global_init"),
        APX_SYM(global_cleanup, "curl_global_cleanup"),
        APX_SYM(easy_init, "curl_easy_init"),
        APX_SYM(easy_setopt, "curl_easy_setopt"),
        APX_SYM(easy_getinfo, "curl_easy_getinfo"),
        APX_SYM(easy_cleanup, "curl_easy_cleanup"),
        APX_SYM(easy_strerror, "curl_easy_strerror"),
        APX_SYM(multi_init, "curl_multi_init"),
        APX_SYM(multi_setopt, "curl_multi_setopt"),
        APX_SYM(multi_add_handle, "curl_multi_add_handle"),
        APX_SYM(multi_remove_handle, "curl_multi_remove_handle"),
        APX_SYM(multi_info_read, "curl_multi_info_read"),
        APX_SYM(multi_socket_action, "curl_multi_socket_action"),
        APX_SYM(multi_assign, "curl_multi_assign"),
        APX_SYM(multi_cleanup, "curl_multi_cleanup"),
        APX_SYM(slist_append, "curl_slist_append"),
        APX_SYM(slist_free_all, "curl_slist_free_all"),
#undef APX_SYM
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        /* POSIX: a data pointer from dlsym converts to a function pointer */
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            snprintf(apx_cu_error, sizeof apx_cu_error, "%s has no %s (libcurl >= 7.85 needed)", APX_LIBCURL,
                     syms[i].name);
            dlclose(h);
            *err = apx_cu_error;
            return -ENOENT;
        }
    }
    apx_cu = a;
    apx_cu_loaded = true;
    return 0;
}

bool apx_curl_loaded(void)
{
    return apx_cu_loaded;
}
