/* relerr: how far a tensor of ours is from a reference (PyTorch's, or the
 * other engine's), for the model tests. Header-only: each test is one .c. */
#ifndef RELERR_H
#define RELERR_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

/* Largest |a-b| over the largest |b|: a relative error that is not fooled by
 * tiny entries. Prints the tensor's figure so a failure shows both sides. */
static inline double relerr(const char *what, const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num) {
            num = d;
            worst = i;
        }
        den = fmax(den, fabs((double)b[i]));
    }
    double rel = den > 0 ? num / den : num;
    printf("  %-22s rel err %.2e (worst [%zu]: ours %.8g, reference %.8g)\n", what, rel, worst,
           a[worst], b[worst]);
    return rel;
}

#endif
