/*
 * nRF52840 (nRF52840-DK): the core always runs at 64 MHz; starting the external 32 MHz
 * crystal makes that clock accurate, and the instruction cache makes flash reads fast.
 * Console: UARTE0 on P0.06 (TX) / P0.08 (RX), the pins the DK's J-Link OB bridges to its
 * virtual COM port; 115200 8N1. UARTE sends by EasyDMA, which reads RAM only, so each line
 * is copied into a RAM buffer first.
 * Register offsets from the nRF52840 Product Specification v1.7. Untested on hardware.
 */
#include <stdint.h>

#include "board.h"
#include "halt.h"
#include "reg.h"

#define CLOCK_TASKS_HFCLKSTART REG32(0x40000000u)
#define CLOCK_EVENTS_HFCLKSTARTED REG32(0x40000100u)
#define NVMC_ICACHECNF REG32(0x4001E540u)
#define NVMC_ICACHECNF_CACHEEN 1u

#define P0_OUTSET REG32(0x50000508u)
#define P0_PIN_CNF(pin) REG32(0x50000700u + 4u * (pin))
#define PIN_CNF_DIR_OUTPUT 1u
#define PIN_CNF_INPUT_CONNECT 0u
#define PIN_CNF_INPUT_DISCONNECT (1u << 1)

#define UARTE0_BASE 0x40002000u
#define UARTE_TASKS_STARTTX REG32(UARTE0_BASE + 0x008u)
#define UARTE_EVENTS_ENDTX REG32(UARTE0_BASE + 0x120u)
#define UARTE_ENABLE REG32(UARTE0_BASE + 0x500u)
#define UARTE_PSEL_RTS REG32(UARTE0_BASE + 0x508u)
#define UARTE_PSEL_TXD REG32(UARTE0_BASE + 0x50Cu)
#define UARTE_PSEL_CTS REG32(UARTE0_BASE + 0x510u)
#define UARTE_PSEL_RXD REG32(UARTE0_BASE + 0x514u)
#define UARTE_BAUDRATE REG32(UARTE0_BASE + 0x524u)
#define UARTE_TXD_PTR REG32(UARTE0_BASE + 0x544u)
#define UARTE_TXD_MAXCNT REG32(UARTE0_BASE + 0x548u)
#define UARTE_CONFIG REG32(UARTE0_BASE + 0x56Cu)
#define UARTE_ENABLE_ENABLED 8u
#define UARTE_PSEL_DISCONNECTED 0xFFFFFFFFu
#define UARTE_BAUDRATE_115200 0x01D7E000u

#define CONSOLE_TX_PIN 6u
#define CONSOLE_RX_PIN 8u
#define CONSOLE_DMA_BYTES 256u

static uint8_t console_dma[CONSOLE_DMA_BYTES];

void board_init(void)
{
    NVMC_ICACHECNF = NVMC_ICACHECNF_CACHEEN;
    CLOCK_EVENTS_HFCLKSTARTED = 0u;
    CLOCK_TASKS_HFCLKSTART = 1u;
    while (CLOCK_EVENTS_HFCLKSTARTED == 0u) {
    }
    /* TX idles high as an output before the UARTE takes the pin (PS v1.7, 6.34.2) */
    P0_OUTSET = 1u << CONSOLE_TX_PIN;
    P0_PIN_CNF(CONSOLE_TX_PIN) = PIN_CNF_DIR_OUTPUT | PIN_CNF_INPUT_DISCONNECT;
    P0_PIN_CNF(CONSOLE_RX_PIN) = PIN_CNF_INPUT_CONNECT;
    UARTE_PSEL_TXD = CONSOLE_TX_PIN;
    UARTE_PSEL_RXD = CONSOLE_RX_PIN;
    UARTE_PSEL_RTS = UARTE_PSEL_DISCONNECTED;
    UARTE_PSEL_CTS = UARTE_PSEL_DISCONNECTED;
    UARTE_BAUDRATE = UARTE_BAUDRATE_115200;
    UARTE_CONFIG = 0u; /* no parity, one stop bit, no flow control */
    UARTE_ENABLE = UARTE_ENABLE_ENABLED;
}

void board_console_write(const char *data, size_t length)
{
    while (length > 0u) {
        size_t chunk = length < CONSOLE_DMA_BYTES ? length : CONSOLE_DMA_BYTES;
        size_t i;
        for (i = 0u; i < chunk; i++) {
            console_dma[i] = (uint8_t)data[i];
        }
        UARTE_TXD_PTR = (uint32_t)(uintptr_t)console_dma;
        UARTE_TXD_MAXCNT = (uint32_t)chunk;
        UARTE_EVENTS_ENDTX = 0u;
        UARTE_TASKS_STARTTX = 1u;
        while (UARTE_EVENTS_ENDTX == 0u) { /* the buffer is reused: wait for the transfer */
        }
        data += chunk;
        length -= chunk;
    }
}

void board_console_drain(void)
{
    /* board_console_write returns after ENDTX; the last byte's stop bit follows within one
     * character time, which the halting core does not cut short. */
}

void board_halt(int status)
{
    (void)status;
    halt_sleep();
}
