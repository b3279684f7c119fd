/* wire_half: the float <-> float16 conversions that wire.c uses where the
 * compiler may not use F16C instructions (and for a tensor's last values
 * when it may), exported so that tests reach them on any machine. Round to
 * nearest, ties to even; overflow gives infinity, NaN stays NaN (quiet),
 * values below half the smallest subnormal give a signed zero. */
#ifndef WIRE_HALF_H
#define WIRE_HALF_H

#include <stdint.h>

uint16_t wire_f2h_soft(float f);
float wire_h2f_soft(uint16_t h);

/* 1 when wire.c uses the F16C instructions here: the CPU has AVX and F16C
 * and the OS saves the YMM registers (CPUID and XGETBV); 0 elsewhere. */
int wire_cpu_has_f16c(void);

#endif
