/* core/fs.h — small file-system helpers. */
#ifndef ANYREF_FS_H
#define ANYREF_FS_H
/* mkdir -p of the directory part of `path` (everything before the last '/').
 * 0 on success (or nothing to do), -1 + ar_error naming the directory. */
int ar_mkdir_parent(const char *path);
#endif
