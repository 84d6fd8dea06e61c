/* core/fs.c — see fs.h. */
#include "core/fs.h"
#include "core/error.h"
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

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

int ar_fsync_path(const char *path, int is_dir) {
    int fd = open(path, O_RDONLY | (is_dir ? O_DIRECTORY : 0));
    if (fd < 0) return ar_errorf("cannot open '%s' to sync it: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0 && !(is_dir && (err == EINVAL || err == ENOTSUP)))
        return ar_errorf("cannot sync '%s': %s", path, strerror(err));
    return 0;
}

int ar_commit_file(const char *tmp, const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) >= sizeof dir) { unlink(tmp); return ar_errorf("path too long: '%s'", path); }
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (ar_fsync_path(tmp, 0)) { unlink(tmp); return -1; }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ar_errorf("cannot rename '%s' to '%s': %s", tmp, path, strerror(e));
    }
    return ar_fsync_path(dir, 1);
}
