/*
 * Console over the board's UART (console.h): lines are buffered and handed to the board's
 * driver (board_console_write), '\n' sent as "\r\n" for terminal programs. console_exit prints
 * "exit <status>", waits for the last byte to leave and calls board_halt, so the host reading
 * the serial port knows the run ended and how.
 */
#include <stddef.h>

#include "board.h"
#include "console.h"

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

void console_putc(char c)
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

void console_exit(int status)
{
    console_puts("exit ");
    console_put_i32(status);
    console_puts("\n");
    console_flush();
    board_console_drain();
    board_halt(status);
}
