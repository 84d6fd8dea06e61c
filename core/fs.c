/* core/fs.c — see fs.h. */
#include "core/fs.h"
#include "core/error.h"
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

int ar_mkdir_parent(const char *path) {
    char buf[4096];
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return 0;
    size_t n = (size_t)(slash - path);
    if (n >= sizeof buf) return ar_errorf("path too long: '%s'", path);
    memcpy(buf, path, n); buf[n] = 0;
    for (char *p = buf + 1; ; p++) {
        char c = *p;
        if (c == '/' || c == 0) {
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return ar_errorf("cannot create directory '%s': %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    return 0;
}
