/*
 * PL011 UART. Shared by the Pico (RP2040 UART0) and by the test that runs it on QEMU's
 * lm3s6965evb, whose UART0 is a PL011 at 0x4000C000 (tests/test_boards.py).
 */
#include "pl011_uart.h"

#include "reg.h"

#define UART_DR(base) REG32((base) + 0x000u)
#define UART_FR(base) REG32((base) + 0x018u)
#define UART_IBRD(base) REG32((base) + 0x024u)
#define UART_FBRD(base) REG32((base) + 0x028u)
#define UART_LCR_H(base) REG32((base) + 0x02Cu)
#define UART_CR(base) REG32((base) + 0x030u)
#define UART_FR_BUSY (1u << 3)
#define UART_FR_TXFF (1u << 5)
#define UART_LCR_H_FEN (1u << 4)
#define UART_LCR_H_WLEN_8 (3u << 5)
#define UART_CR_UARTEN (1u << 0)
#define UART_CR_TXE (1u << 8)
#define UART_CR_RXE (1u << 9)

void pl011_init(uint32_t base, uint32_t ibrd, uint32_t fbrd)
{
    UART_CR(base) = 0u;
    UART_IBRD(base) = ibrd;
    UART_FBRD(base) = fbrd;
    UART_LCR_H(base) = UART_LCR_H_WLEN_8 | UART_LCR_H_FEN; /* also latches IBRD/FBRD */
    UART_CR(base) = UART_CR_UARTEN | UART_CR_TXE | UART_CR_RXE;
}

void pl011_write(uint32_t base, const char *data, size_t length)
{
    size_t i;
    for (i = 0u; i < length; i++) {
        while ((UART_FR(base) & UART_FR_TXFF) != 0u) {
        }
        UART_DR(base) = (uint8_t)data[i];
    }
}

void pl011_drain(uint32_t base)
{
    while ((UART_FR(base) & UART_FR_BUSY) != 0u) {
    }
}
