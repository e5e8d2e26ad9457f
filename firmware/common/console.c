/*
 * The console's text formatting, shared by both consoles: each one (semihost.c,
 * uart_console.c) supplies console_putc, console_flush and console_exit. Decimal by hand, no
 * printf: newlib nano's costs kilobytes.
 */
#include "console.h"

void console_puts(const char *text)
{
    while (*text != '\0') {
        console_putc(*text);
        text++;
    }
}

void console_put_u32(uint32_t value)
{
    char digits[10]; /* least significant first */
    uint32_t n = 0u;
    do {
        digits[n] = (char)('0' + (value % 10u));
        n++;
        value /= 10u;
    } while (value != 0u);
    while (n > 0u) {
        n--;
        console_putc(digits[n]);
    }
}

void console_put_i32(int32_t value)
{
    if (value < 0) {
        console_putc('-');
        console_put_u32(0u - (uint32_t)value); /* INT32_MIN included, in unsigned arithmetic */
    } else {
        console_put_u32((uint32_t)value);
    }
}
