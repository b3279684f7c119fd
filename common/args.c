/* args: checked parsing of command-line values (see args.h). */
#include "args.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int args_int(const char *flag, const char *s, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "error: %s '%s' is not a whole number from %ld to %ld\n", flag, s, min,
                max);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int args_u64(const char *flag, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-') {
        fprintf(stderr, "error: %s '%s' is not a whole number from 0 to %llu\n", flag, s,
                ULLONG_MAX);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int args_double(const char *flag, const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v) || v < min || v > max) {
        fprintf(stderr, "error: %s '%s' is not a number from %g to %g\n", flag, s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int args_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
