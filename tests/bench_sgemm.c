/* bench_sgemm: the machine's practical BLAS ceiling, the figure our training
 * speed is judged against. Times OpenBLAS cblas_sgemm on 2048x2048x2048 with
 * the given number of BLAS threads and prints the median GFLOP/s of 5 runs:
 *   bench_sgemm THREADS   ->   "sgemm threads=2 gflops=128.4" */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "args.h"
#include "clock.h"

void openblas_set_num_threads(int num_threads);

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int threads = 1, n = 2048;
    if (argc > 1 && args_int("THREADS", argv[1], 1, 256, &threads) != 0)
        return 2;
    openblas_set_num_threads(threads);
    float *a = malloc((size_t)n * n * sizeof(float)), *b = malloc((size_t)n * n * sizeof(float)),
          *c = malloc((size_t)n * n * sizeof(float));
    if (!a || !b || !c)
        return 1;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.2f;
    }
    double g[5];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    for (int r = 0; r < 5; r++) {
        double t0 = clock_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        g[r] = 2.0 * n * n * (double)n / (clock_now() - t0) / 1e9;
    }
    qsort(g, 5, sizeof *g, s_cmp);
    printf("sgemm threads=%d gflops=%.1f\n", threads, g[2]);
    free(a);
    free(b);
    free(c);
    return 0;
}
