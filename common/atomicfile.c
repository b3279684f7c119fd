/* atomicfile: temporary file, fsync, rename, fsync of the directory (see
 * atomicfile.h for why each step). */
#include "atomicfile.h"
#include "errmsg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

FILE *atomicfile_open(atomicfile_t *af, const char *path, char *err, size_t errlen)
{
    af->fp = NULL;
    af->path = path;
    size_t len = strlen(path) + 32;
    af->tmp = malloc(len);
    if (!af->tmp) {
        errmsg_set(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    snprintf(af->tmp, len, "%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp, "wb");
    if (!af->fp) {
        errmsg_set(err, errlen, "%s: cannot create %s: %s", path, af->tmp, strerror(errno));
        free(af->tmp);
        af->tmp = NULL;
    }
    return af->fp;
}

void atomicfile_abort(atomicfile_t *af)
{
    if (af->fp) {
        fclose(af->fp);
        unlink(af->tmp);
    }
    free(af->tmp);
    af->fp = NULL;
    af->tmp = NULL;
}

/* fsyncs the directory holding path, so that a rename into it is durable. */
static int s_fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int atomicfile_commit(atomicfile_t *af, char *err, size_t errlen)
{
    /* `what` names the first step that failed and `e` its errno. */
    const char *what = NULL;
    int e = 0;
    if (ferror(af->fp) || fflush(af->fp) != 0) {
        what = "cannot write";
        e = errno;
    } else if (fsync(fileno(af->fp)) != 0) {
        what = "cannot fsync";
        e = errno;
    }
    if (fclose(af->fp) != 0 && !what) {
        what = "cannot close";
        e = errno;
    }
    af->fp = NULL;
    if (!what && rename(af->tmp, af->path) != 0) {
        what = "cannot rename into place";
        e = errno;
    }
    if (what) {
        errmsg_set(err, errlen, "%s: %s %s: %s", af->path, what, af->tmp,
                   e ? strerror(e) : "write error");
        unlink(af->tmp);
    }
    free(af->tmp);
    af->tmp = NULL;
    if (what)
        return -1;
    if (s_fsync_dir(af->path) != 0) {
        errmsg_set(err, errlen, "%s: written, but cannot fsync its directory: %s", af->path,
                   strerror(errno));
        return -1;
    }
    return 0;
}
