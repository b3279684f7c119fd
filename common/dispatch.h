/* dispatch.h: run-time CPU dispatch for our own hot loops.
 *
 * The default build targets the x86-64 baseline, so that a binary built here
 * runs on any x86-64 machine (workers on other machines need only the binary).
 * OpenBLAS picks its kernels for the CPU at run time by itself; for our loops,
 * HOT_KERNEL asks GCC to compile the function three
 * times, for the baseline, for x86-64-v3 (AVX2, FMA: Intel Haswell, AMD
 * Excavator and later) and for x86-64-v4 (AVX-512: without it the masked
 * pooling loops run at half the speed of a -march=native build on such CPUs),
 * and the loader picks the best one the CPU runs. The helpers
 * of a HOT_KERNEL function are HOT_INLINE: always inlined, so that they are
 * compiled into every version, with the caller's constants propagated.
 *
 * `make NATIVE=1` builds for this machine's CPU only (-march=native); then
 * the compiler already targets the CPU and HOT_KERNEL adds nothing. The versions
 * may differ in the last bits (FMA rounds once), like OpenBLAS's kernels on
 * different CPUs: results are bit-for-bit reproducible on one machine.
 *
 * Clang (14, Debian 12's; used for make fuzz) gets no clones: it names the
 * clones' resolver "f.ifunc", so calls to f from other files do not link.
 * Its baseline build is slower, not different in kind. */
#ifndef DISPATCH_H
#define DISPATCH_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__AVX2__)
#define HOT_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT_KERNEL
#endif

#define HOT_INLINE static inline __attribute__((always_inline))

#endif
