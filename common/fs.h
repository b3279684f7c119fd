/* fs: file-system helpers shared by the programs: mkdir -p of a directory
 * or of the directory a file goes in. Both return 0, or -1 with errno set
 * (the caller names the path in its message). Writing files atomically is
 * atomicfile.h's job. */
#ifndef FS_H
#define FS_H

/* Creates a directory and its parents (like mkdir -p). 0 or -1 with errno. */
int fs_mkdirs(const char *path);

/* Creates the directory a file at path goes in, and its parents (mkdir -p
 * of its dirname; nothing when path has no directory part). 0 or -1 with
 * errno. */
int fs_mkdir_parent(const char *path);

#endif
