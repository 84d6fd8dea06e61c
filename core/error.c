/* core/error.c — thread-local error message buffer (see error.h). */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[AR_ERROR_MAX];

int ar_errorf(const char *fmt, ...) {
    char tmp[AR_ERROR_MAX];              /* arguments may alias g_msg */
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (r < 0) tmp[0] = '\0';
    memcpy(g_msg, tmp, sizeof g_msg);
    return -1;
}

const char *ar_error(void) { return g_msg; }

void ar_error_clear(void) { g_msg[0] = '\0'; }

int ar_error_prefix(const char *fmt, ...) {
    char tmp[AR_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (r < 0) return -1;
    size_t plen = strlen(tmp);
    size_t room = sizeof tmp - 1 - plen;   /* bytes left for the old message */
    size_t olen = strlen(g_msg);
    if (olen > room) olen = room;
    memcpy(tmp + plen, g_msg, olen);
    tmp[plen + olen] = '\0';
    memcpy(g_msg, tmp, plen + olen + 1);
    return -1;
}
