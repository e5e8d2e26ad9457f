/*
 * The harness's text output. Two implementations, one linked per build: semihost.c (through
 * the debugger or QEMU: the QEMU boards and `build --semihosting`) and uart_console.c (the
 * board's UART: the default on real boards and on qemu-stm32f405).
 */
#ifndef LSTM_EMBED_CONSOLE_H
#define LSTM_EMBED_CONSOLE_H

#include <stdint.h>

/* Each console's one output primitive; the rest is console.c's formatting on top of it. */
void console_putc(char c);
void console_puts(const char *text);
void console_put_i32(int32_t value);
void console_put_u32(uint32_t value);
void console_flush(void);
/* Ends the program: under semihosting the status reaches QEMU's exit status; over a UART
 * the line "exit <status>" is printed and the core sleeps. */
void console_exit(int status) __attribute__((noreturn));

#endif
