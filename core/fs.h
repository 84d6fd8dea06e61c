/* core/fs.h — small file-system helpers. */
#ifndef ANYREF_FS_H
#define ANYREF_FS_H
/* mkdir -p of the directory part of `path` (everything before the last '/').
 * 0 on success (or nothing to do), -1 + ar_error naming the directory. */
int ar_mkdir_parent(const char *path);
/* fsync of a file, or of a directory (filesystems that cannot sync a directory
 * answer EINVAL/ENOTSUP, which is accepted). 0, or -1 + ar_error. */
int ar_fsync_path(const char *path, int is_dir);
/* Makes a finished temporary file the real one, durably: fsync(tmp), rename
 * over path, fsync the directory. An interrupted commit leaves path as it was
 * (the old file or none). 0, or -1 + ar_error (tmp is then removed). */
int ar_commit_file(const char *tmp, const char *path);
#endif
