/*
 * What a board file (firmware/boards/) provides. board_init is called by Reset_Handler after
 * .data/.bss set-up and before main: clocks, and the console UART on boards that print over one.
 * The console functions are needed only when uart_console.c is linked.
 */
#ifndef LSTM_EMBED_BOARD_H
#define LSTM_EMBED_BOARD_H

#include <stddef.h>

void board_init(void);
/* Sends length bytes over the console UART (blocking). */
void board_console_write(const char *data, size_t length);
/* Returns once the last byte has left the UART's shift register. */
void board_console_drain(void);
/* After the run: sleep (real boards) or end the emulation. */
void board_halt(int status) __attribute__((noreturn));

#endif
