/* test_half: the float <-> float16 conversions wire.c falls back on when
 * F16C is not available (wire_half.h), tested directly, so that make check
 * reaches them on a machine with F16C too.
 *
 * Every one of the 65,536 halves decodes to the value its bits define
 * (computed here with ldexp) and encodes back to itself; every midpoint
 * between two neighbouring halves rounds to the even one, and a float just
 * either side of it to the nearer one; the special values (signed zeros,
 * infinities, NaN, overflow, subnormals, underflow) come out as IEEE 754
 * says. Where the CPU has F16C, a million random floats encode
 * exactly as the instructions do. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "wire_half.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_F16C_TEST 1
/* The instruction, compiled for F16C whatever the build's target; called only
 * where the CPU has it. */
__attribute__((target("f16c"))) static uint16_t s_hard_f2h(float f)
{
    return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}
#endif

/* The value of half h, from its definition. NaN for NaNs. */
static double s_half_value(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 31)
        v = mant ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexp(mant, -24); /* subnormal: mant x 2^-24 */
    else
        v = ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

static int s_is_nan_half(uint16_t h)
{
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}

static void test_decode_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = wire_h2f_soft((uint16_t)h);
        double want = s_half_value((uint16_t)h);
        if (isnan(want)) {
            if (!isnan(got))
                fail_msg("half 0x%04x: %g, not NaN", h, got);
            continue;
        }
        if ((double)got != want || !signbit(got) != !signbit(want))
            fail_msg("half 0x%04x: %.9g, want %.9g", h, got, want);
    }
}

static void test_encode_round_trip(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t back = wire_f2h_soft(wire_h2f_soft((uint16_t)h));
        if (s_is_nan_half((uint16_t)h)) {
            if (!s_is_nan_half(back) || (back & 0x8000) != (h & 0x8000))
                fail_msg("NaN 0x%04x came back as 0x%04x", h, back);
            continue;
        }
        if (back != h)
            fail_msg("half 0x%04x came back as 0x%04x", h, back);
    }
}

/* Between each pair of neighbouring finite halves of the same sign: the
 * midpoint (exact in float) goes to the even one, a float just below it down
 * and just above it up. */
static void test_encode_rounding(void **state)
{
    (void)state;
    for (uint32_t sign = 0; sign <= 0x8000; sign += 0x8000) {
        for (uint32_t m = 0; m < 0x7bff; m++) {
            uint16_t lo = (uint16_t)(sign | m), hi = (uint16_t)(sign | (m + 1));
            double a = s_half_value(lo), b = s_half_value(hi);
            float mid = (float)((a + b) / 2);
            assert_true((double)mid == (a + b) / 2);
            uint16_t even = (lo & 1) ? hi : lo;
            float toward_a = nextafterf(mid, (float)a), toward_b = nextafterf(mid, (float)b);
            uint16_t got_mid = wire_f2h_soft(mid), got_a = wire_f2h_soft(toward_a),
                     got_b = wire_f2h_soft(toward_b);
            if (got_mid != even || got_a != lo || got_b != hi)
                fail_msg("between 0x%04x and 0x%04x: midpoint %.9g -> 0x%04x (want 0x%04x), "
                         "below -> 0x%04x, above -> 0x%04x",
                         lo, hi, mid, got_mid, even, got_a, got_b);
        }
    }
}

static void test_special_values(void **state)
{
    (void)state;
    struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {65504.0f, 0x7bff},  /* the largest half */
        {65519.99f, 0x7bff}, /* just under the overflow threshold */
        {65520.0f, 0x7c00},  /* the threshold: ties to even = infinity */
        {1e9f, 0x7c00},      /* overflow */
        {-1e9f, 0xfc00},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
        {0x1p-14f, 0x0400},         /* the smallest normal */
        {0x1p-24f, 0x0001},         /* the smallest subnormal */
        {0x1p-25f, 0x0000},         /* half of it: ties to even = 0 */
        {0x1.8p-25f, 0x0001},       /* 0.75 of it: up */
        {-0x1p-25f, 0x8000},        /* a signed zero */
        {0x1p-30f, 0x0000},         /* underflow */
        {1e-40f, 0x0000},           /* a float subnormal */
        {0x1.ffcp-15f, 0x03ff + 1}, /* rounds up from the largest subnormal */
        {3.14159265f, 0x4248},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = wire_f2h_soft(cases[i].f);
        if (got != cases[i].h)
            fail_msg("%a: 0x%04x, want 0x%04x", (double)cases[i].f, got, cases[i].h);
    }
    uint16_t qnan = wire_f2h_soft(NAN), snan_neg = wire_f2h_soft(-__builtin_nansf(""));
    assert_true(s_is_nan_half(qnan) && (qnan & 0x8000) == 0);
    assert_true(s_is_nan_half(snan_neg) && (snan_neg & 0x8000) != 0);
    assert_true(isnan(wire_h2f_soft(0x7e00)) && isnan(wire_h2f_soft(0xfc01)));
    assert_true(wire_h2f_soft(0x7c00) == INFINITY && wire_h2f_soft(0xfc00) == -INFINITY);
    assert_true(signbit(wire_h2f_soft(0x8000)) && wire_h2f_soft(0x8000) == 0.0f);
}

/* The fallback and the instructions agree on random floats of every
 * magnitude (NaNs compared as NaNs: the instructions keep payload bits). */
static void test_matches_f16c(void **state)
{
    (void)state;
#ifdef HAVE_F16C_TEST
    if (!wire_cpu_has_f16c())
        skip(); /* no F16C on this CPU: the exhaustive tests above stand alone */
    uint32_t seed = 12345;
    for (int i = 0; i < 1000000; i++) {
        seed = seed * 1664525u + 1013904223u;
        uint32_t bits = seed;
        if (i % 4 == 0) /* also many in the half's range: exponents 127 +- 30 */
            bits = (bits & 0x807fffff) | ((97u + (seed >> 8) % 60) << 23);
        float f;
        memcpy(&f, &bits, sizeof f);
        uint16_t soft = wire_f2h_soft(f), hard = s_hard_f2h(f);
        if (isnan(f) ? !s_is_nan_half(soft) : soft != hard)
            fail_msg("%a (0x%08x): fallback 0x%04x, F16C 0x%04x", (double)f, bits, soft, hard);
    }
#else
    skip(); /* not x86-64 */
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_all),      cmocka_unit_test(test_encode_round_trip),
        cmocka_unit_test(test_encode_rounding), cmocka_unit_test(test_special_values),
        cmocka_unit_test(test_matches_f16c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
