/* Decimal formatting shared by both consoles (no printf: nano's costs kilobytes). */
#ifndef LSTM_EMBED_CONSOLE_FORMAT_H
#define LSTM_EMBED_CONSOLE_FORMAT_H

#include <stdint.h>

/* Writes the digits of value into digits[0..9], least significant first; returns how many. */
static inline uint32_t console_digits(char digits[10], uint32_t value)
{
    uint32_t n = 0u;
    do {
        digits[n] = (char)('0' + (value % 10u));
        n++;
        value /= 10u;
    } while (value != 0u);
    return n;
}

#endif
