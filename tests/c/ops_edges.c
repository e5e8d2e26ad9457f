/*
 * Edge-case driver for the generated fixed-point operations (tests/test_reliability.py).
 * Compiled together with a generated model named "net" (which defines the static ops), it
 * reads one operation per line on stdin and prints one result line:
 *   R acc multiplier shift   -> net_requantize
 *   S value shift            -> net_rshift_round
 *   Q float_bits_hex         -> net_float_to_s16
 *   G z | T z | H z          -> sigmoid / tanh / hard_sigmoid (Q0.15)
 *   X n z_1 .. z_n           -> softmax of n logits (Z16), n <= 8
 *   L cell_frac c h z_i z_f z_g z_o -> one LSTM step of one unit with the given pre-activations;
 *                               prints c' h'
 * Every field of every parameter struct is set here. The tests build this file with
 * -ftrivial-auto-var-init=pattern beside the sanitizers, so a field left unset (for instance one
 * added to the struct later) holds 0xFE bytes, which UBSan, ASan or the checked results expose.
 */
#include <stdio.h>
#include <string.h>

#include "net.c"

/* z = requantize(bias + 0, 2^30, 30) = bias: every gate pre-activation is set by its bias. */
static const int8_t zero_weights[4 * 2] = {0};
static const int32_t identity_multiplier[8] = {
    1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30, 1 << 30};
static const int8_t identity_shift[8] = {30, 30, 30, 30, 30, 30, 30, 30};

int main(void)
{
    char op[2];
    while (scanf("%1s", op) == 1) {
        if (op[0] == 'R') {
            long long acc, multiplier, shift;
            if (scanf("%lld %lld %lld", &acc, &multiplier, &shift) != 3) return 2;
            printf("%ld\n", (long)net_requantize((int32_t)acc, (int32_t)multiplier, (int32_t)shift));
        } else if (op[0] == 'S') {
            long long value, shift;
            if (scanf("%lld %lld", &value, &shift) != 2) return 2;
            printf("%ld\n", (long)net_rshift_round((int32_t)value, (int32_t)shift));
        } else if (op[0] == 'Q') {
            unsigned int bits;
            float v;
            if (scanf("%x", &bits) != 1) return 2;
            memcpy(&v, &bits, sizeof v);
            printf("%d\n", (int)net_float_to_s16(v));
        } else if (op[0] == 'G' || op[0] == 'T' || op[0] == 'H') {
            long long z;
            int32_t y;
            if (scanf("%lld", &z) != 1) return 2;
            y = op[0] == 'G' ? net_sigmoid_q15((int32_t)z)
                : op[0] == 'T' ? net_tanh_q15((int32_t)z) : net_hard_sigmoid_q15((int32_t)z);
            printf("%ld\n", (long)y);
        } else if (op[0] == 'X') {
            int n, k;
            long long z;
            int32_t bias[8], logits[8];
            int16_t x[8] = {0}, y[8];
            net_dense_params_t p;
            if (scanf("%d", &n) != 1 || n < 1 || n > 8) return 2;
            for (k = 0; k < n; ++k) {
                if (scanf("%lld", &z) != 1) return 2;
                bias[k] = (int32_t)z;
            }
            p.weights_s8 = zero_weights;
            p.weights_s16 = 0; /* int8 rows */
            p.bias_s32 = bias;
            p.multiplier = identity_multiplier;
            p.shift = identity_shift;
            p.input_size = 1;
            p.units = n;
            net_dense_softmax(&p, x, y, logits);
            for (k = 0; k < n; ++k) printf("%d%s", (int)y[k], k + 1 < n ? " " : "\n");
        } else if (op[0] == 'L') {
            long long cell_frac, c0, h0, z[4];
            int16_t x = 0, h, c, scratch;
            int32_t bias[4];
            net_lstm_params_t p;
            if (scanf("%lld %lld %lld %lld %lld %lld %lld", &cell_frac, &c0, &h0, &z[0], &z[1],
                    &z[2], &z[3]) != 7) return 2;
            bias[0] = (int32_t)z[0];
            bias[1] = (int32_t)z[1];
            bias[2] = (int32_t)z[2];
            bias[3] = (int32_t)z[3];
            p.weights_s8 = zero_weights;
            p.weights_s16 = 0; /* int8 rows */
            p.bias_s32 = bias;
            p.multiplier = identity_multiplier;
            p.shift = identity_shift;
            p.input_size = 1;
            p.units = 1;
            p.cell_frac = (int32_t)cell_frac;
            p.hard_sigmoid = 0;
            p.input_shift = 0; /* the input columns carry no extra scale */
            h = (int16_t)h0;
            c = (int16_t)c0;
            net_lstm_step(&p, &x, &h, &c, &scratch);
            printf("%d %d\n", (int)c, (int)h);
        } else {
            return 2;
        }
    }
    return 0;
}
