/* test_compress: the tensor encodings of the wire format. float16 round
 * trips to within half-precision rounding (and matches a reference on
 * special values); int8 blocks round trip to within half a quantisation step;
 * error feedback carries what int8 loses into the next tensor, so the sum of
 * what arrives tracks the sum of what was sent; frames that decode to a
 * non-finite value are refused by wire_recv. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model.h"
#include "rng.h"
#include "wire.h"

#define N MODEL_NPARAMS

static float s_in[N], s_out[N];

static void s_fill(uint64_t seed, float scale)
{
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < N; i++)
        s_in[i] = rng_uniform(&r, -scale, scale);
}

/* Encodes s_in, wraps it as a received message, decodes into s_out. */
static void s_round_trip(int enc, float *residual)
{
    zmq_msg_t msg;
    assert_int_equal(wire_tensor_encode_n(&msg, s_in, N, enc, residual), 0);
    assert_int_equal(zmq_msg_size(&msg), wire_encoded_size_n(enc, N));
    wire_msg_t m = {.encoding = enc, .count = N, .has_tensor_msg = 1};
    zmq_msg_init(&m.tensor_msg);
    zmq_msg_move(&m.tensor_msg, &msg);
    if (enc == PS__ENCODING__ENCODING_F32)
        m.tensor = zmq_msg_data(&m.tensor_msg);
    const float *t = wire_tensor(&m, s_out);
    if (t != s_out)
        memcpy(s_out, t, sizeof s_out);
    wire_msg_close(&m);
    zmq_msg_close(&msg);
}

static void test_sizes(void **state)
{
    (void)state;
    assert_int_equal(wire_encoded_size_n(PS__ENCODING__ENCODING_F32, N), 4 * N);
    assert_int_equal(wire_encoded_size_n(PS__ENCODING__ENCODING_F16, N), 2 * N);
    assert_int_equal(wire_encoded_size_n(PS__ENCODING__ENCODING_I8, N), N + 4 * ((N + 255) / 256));
    assert_int_equal(wire_encoded_size_n(7, N), 0);
    printf("  bytes per tensor: f32 %zu, f16 %zu, i8 %zu\n", wire_encoded_size_n(0, N),
           wire_encoded_size_n(1, N), wire_encoded_size_n(2, N));
}

static void test_f16_round_trip(void **state)
{
    (void)state;
    s_fill(1, 3.0f);
    /* special values: zero, -zero, a subnormal half, the largest half, 1/3 */
    s_in[0] = 0.0f, s_in[1] = -0.0f, s_in[2] = 3.0e-6f, s_in[3] = 65504.0f, s_in[4] = 1.0f / 3;
    s_round_trip(PS__ENCODING__ENCODING_F16, NULL);
    double worst = 0;
    for (int i = 5; i < N; i++) {
        double rel = fabs((double)s_out[i] - s_in[i]) / fmax(fabs((double)s_in[i]), 6.1e-5);
        worst = fmax(worst, rel);
    }
    printf("  f16 worst relative error %.2e (half precision: 4.9e-04)\n", worst);
    assert_true(worst <= 1.0 / 2048 + 1e-7);
    assert_true(s_out[0] == 0.0f && !signbit(s_out[0]) && s_out[1] == 0.0f && signbit(s_out[1]));
    assert_true(fabsf(s_out[2] - 3.0e-6f) <= 6e-8f); /* subnormal: absolute 2^-24 */
    assert_true(s_out[3] == 65504.0f);
    assert_true(s_out[4] == 0.333251953125f); /* nearest half to 1/3 */
}

static void test_i8_round_trip(void **state)
{
    (void)state;
    s_fill(2, 0.05f);
    memset(s_in + 512, 0, 256 * sizeof(float)); /* an all-zero block */
    s_round_trip(PS__ENCODING__ENCODING_I8, NULL);
    for (int b = 0; b < (N + 255) / 256; b++) {
        int lo = b * 256, hi = lo + 256 < N ? lo + 256 : N;
        float mx = 0;
        for (int i = lo; i < hi; i++)
            mx = fmaxf(mx, fabsf(s_in[i]));
        for (int i = lo; i < hi; i++)
            assert_true(fabsf(s_out[i] - s_in[i]) <= mx / 127 / 2 * 1.0001f + 1e-12f);
    }
    for (int i = 512; i < 768; i++)
        assert_true(s_out[i] == 0.0f);
}

/* With error feedback, after T tensors the total received differs from the
 * total sent by exactly the final residual, which stays below one step. */
static void test_i8_error_feedback(void **state)
{
    (void)state;
    static float residual[N], sent[N], got[N];
    memset(residual, 0, sizeof residual);
    memset(sent, 0, sizeof sent);
    memset(got, 0, sizeof got);
    for (int t = 0; t < 20; t++) {
        s_fill(100 + t, 0.01f);
        for (int i = 0; i < N; i++)
            sent[i] += s_in[i];
        s_round_trip(PS__ENCODING__ENCODING_I8, residual);
        for (int i = 0; i < N; i++)
            got[i] += s_out[i];
    }
    double worst = 0, plain = 0;
    for (int i = 0; i < N; i++) {
        worst = fmax(worst, fabs((double)sent[i] - got[i] - residual[i]));
        plain = fmax(plain, fabs((double)residual[i]));
    }
    printf("  after 20 tensors: |sent - received - residual| <= %.2e, |residual| <= %.2e\n", worst,
           plain);
    assert_true(worst < 1e-6);
    assert_true(plain < 0.02 / 127); /* below one quantisation step of the blocks */
}

/* A half-precision infinity, or an int8 block with a NaN scale, is refused. */
static void test_non_finite_refused(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new(), *a = zmq_socket(ctx, ZMQ_PAIR), *b = zmq_socket(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(a, "inproc://compress"), 0);
    assert_int_equal(zmq_connect(b, "inproc://compress"), 0);
    for (int enc = 1; enc <= 2; enc++) {
        s_fill(3, 1.0f);
        s_in[1234] = enc == 1 ? 1e6f : 0.0f; /* beyond half's range: infinity */
        zmq_msg_t t;
        assert_int_equal(wire_tensor_encode_n(&t, s_in, N, enc, NULL), 0);
        if (enc == 2) { /* spoil block 7's scale */
            float nan = NAN;
            memcpy((unsigned char *)zmq_msg_data(&t) + 7 * (4 + 256), &nan, 4);
        }
        Ps__Envelope env = PS__ENVELOPE__INIT;
        Ps__Weights w = PS__WEIGHTS__INIT;
        w.encoding = (Ps__Encoding)enc;
        env.body_case = PS__ENVELOPE__BODY_WEIGHTS;
        env.weights = &w;
        assert_true(wire_send_msg(b, NULL, &env, &t, 0) > 0);
        wire_msg_t m;
        char err[256];
        assert_int_equal(wire_recv(a, NULL, &m, N, err, sizeof err),
                         PS__ERROR_CODE__ERROR_MALFORMED);
        printf("  encoding %d refused: %s\n", enc, err);
        assert_non_null(strstr(err, enc == 1 ? "value 1234" : "block scale 7"));
    }
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_f16_round_trip),
        cmocka_unit_test(test_i8_round_trip),
        cmocka_unit_test(test_i8_error_feedback),
        cmocka_unit_test(test_non_finite_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
