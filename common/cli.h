/* cli: checked parsing of command-line values and a few process helpers that
 * every program here shares. The parse functions print a message naming the
 * flag, the bad value and the accepted range on stderr and return -1. */
#ifndef CLI_H
#define CLI_H

#include <stdint.h>

/* Integer in [min, max]. */
int cli_int(const char *flag, const char *s, long min, long max, int *out);
/* Unsigned 64-bit integer (decimal). */
int cli_u64(const char *flag, const char *s, uint64_t *out);
/* Finite double in [min, max]. */
int cli_double(const char *flag, const char *s, double min, double max, double *out);

/* Seconds on a monotonic clock (for durations). */
double cli_now(void);
/* Seconds since the epoch (for timestamps). */
double cli_wall(void);

/* Number of online CPUs (>= 1). */
int cli_cpus(void);

/* Creates a directory and its parents (like mkdir -p). 0 or -1 with errno. */
int cli_mkdirs(const char *path);

/* Creates the directory a file at path goes in, and its parents (mkdir -p
 * of its dirname; nothing when path has no directory part). 0 or -1 with
 * errno. */
int cli_mkdir_parent(const char *path);

#endif
