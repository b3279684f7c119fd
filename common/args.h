/* args: checked parsing of command-line values, shared by every program here,
 * and the machine facts that flags take as defaults. The parse functions print
 * a message naming the flag, the bad value and the accepted range on stderr
 * and return -1; on success they return 0 and store the value. */
#ifndef ARGS_H
#define ARGS_H

#include <stdint.h>

/* Integer in [min, max]. */
int args_int(const char *flag, const char *s, long min, long max, int *out);
/* Unsigned 64-bit integer (decimal). */
int args_u64(const char *flag, const char *s, uint64_t *out);
/* Finite double in [min, max]. */
int args_double(const char *flag, const char *s, double min, double max, double *out);

/* Number of online CPUs (>= 1): the default of the --threads flags. */
int args_cpus(void);

#endif
