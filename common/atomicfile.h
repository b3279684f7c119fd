/* atomicfile: writes a file so that a reader, or a crash, sees the old file
 * or the new one and never half of one. The data goes to a temporary file
 * beside the target (PATH.tmp.PID, so two writers do not collide), which is
 * flushed, fsync'd, closed and renamed over PATH; the directory is fsync'd
 * too, so the rename itself survives a power cut.
 *
 *     atomicfile_t af;
 *     FILE *fp = atomicfile_open(&af, path, err, errlen);
 *     ... fwrite(..., fp) ...
 *     if (atomicfile_commit(&af, err, errlen) != 0) ...   (or atomicfile_abort(&af))
 *
 * Ownership: the FILE belongs to the atomicfile_t; commit and abort close it
 * and free what open allocated, whatever happens. */
#ifndef ATOMICFILE_H
#define ATOMICFILE_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    FILE *fp;         /* the temporary file, open for writing */
    char *tmp;        /* its path */
    const char *path; /* the target (the caller's string; must outlive commit) */
} atomicfile_t;

/* Creates the temporary file. The stream, or NULL with a message in err. */
FILE *atomicfile_open(atomicfile_t *af, const char *path, char *err, size_t errlen);

/* Flushes, fsyncs and closes the temporary file, renames it over the target
 * and fsyncs the directory. A write error met earlier on the stream is
 * reported here. 0, or -1 with a message naming the step that failed (the
 * temporary file is then removed). */
int atomicfile_commit(atomicfile_t *af, char *err, size_t errlen);

/* Closes and removes the temporary file; the target is left as it was. */
void atomicfile_abort(atomicfile_t *af);

#endif
