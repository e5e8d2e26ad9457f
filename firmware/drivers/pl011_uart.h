/* Arm PrimeCell PL011 UART, transmit only, 8N1 with FIFOs, polled (the RP2040's UART0/1;
 * register map: PL011 TRM DDI 0183, RP2040 datasheet 4.2.8). */
#ifndef LSTM_EMBED_PL011_UART_H
#define LSTM_EMBED_PL011_UART_H

#include <stddef.h>
#include <stdint.h>

/* ibrd/fbrd: the baud divisor uartclk / (16 * baud) as integer and 1/64 fraction */
void pl011_init(uint32_t base, uint32_t ibrd, uint32_t fbrd);
void pl011_write(uint32_t base, const char *data, size_t length);
void pl011_drain(uint32_t base);

#endif
