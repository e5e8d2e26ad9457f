/*
 * Console over the board's UART (console.h): lines are buffered and handed to the board's
 * driver (board_console_write), '\n' sent as "\r\n" for terminal programs. console_exit prints
 * "exit <status>", waits for the last byte to leave and calls board_halt, so the host reading
 * the serial port knows the run ended and how.
 */
#include <stddef.h>

#include "board.h"
#include "console.h"
#include "console_format.h"

#define UART_LINE_BYTES 128u

static char uart_line[UART_LINE_BYTES + 2u];
static size_t uart_used;

void console_flush(void)
{
    if (uart_used == 0u) {
        return;
    }
    board_console_write(uart_line, uart_used);
    uart_used = 0u;
}

static void uart_putc(char c)
{
    if (c == '\n') {
        uart_line[uart_used] = '\r';
        uart_used++;
    }
    uart_line[uart_used] = c;
    uart_used++;
    if (c == '\n' || uart_used >= UART_LINE_BYTES) {
        console_flush();
    }
}

void console_puts(const char *text)
{
    while (*text != '\0') {
        uart_putc(*text);
        text++;
    }
}

void console_put_u32(uint32_t value)
{
    char digits[10];
    uint32_t n = console_digits(digits, value);
    while (n > 0u) {
        n--;
        uart_putc(digits[n]);
    }
}

void console_put_i32(int32_t value)
{
    if (value < 0) {
        uart_putc('-');
        console_put_u32(0u - (uint32_t)value);
    } else {
        console_put_u32((uint32_t)value);
    }
}

void console_exit(int status)
{
    console_puts("exit ");
    console_put_i32(status);
    console_puts("\n");
    console_flush();
    board_console_drain();
    board_halt(status);
}
