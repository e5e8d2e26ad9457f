/*
 * Raspberry Pi Pico (RP2040, Cortex-M0+), image loaded into SRAM by the boot ROM's UF2
 * loader (see pico_entry.S; no boot stage 2, the QSPI flash is not used).
 * Clocks, set here whatever the boot ROM left: the 12 MHz crystal (XOSC) feeds clk_ref and
 * PLL_SYS: VCO = 12 MHz / REFDIV(1) * FBDIV(125) = 1500 MHz, / POSTDIV1(6) / POSTDIV2(2) =
 * 125 MHz for clk_sys; clk_peri (the UART's clock) = clk_sys.
 * Console: UART0 (a PL011: drivers/pl011_uart.c) on GP0 (TX) / GP1 (RX), 115200 8N1.
 * Register offsets from the RP2040 datasheet (chapters 2.14-2.18, 4.2). Untested on hardware.
 */
#include <stdint.h>

#include "board.h"
#include "halt.h"
#include "pl011_uart.h"
#include "reg.h"

#define RESETS_BASE 0x4000C000u
#define RESETS_RESET REG32(RESETS_BASE + 0x0u)
#define RESETS_RESET_SET REG32(RESETS_BASE + 0x2000u)
#define RESETS_RESET_CLR REG32(RESETS_BASE + 0x3000u)
#define RESETS_RESET_DONE REG32(RESETS_BASE + 0x8u)
#define RESET_IO_BANK0 (1u << 5)
#define RESET_PADS_BANK0 (1u << 8)
#define RESET_PLL_SYS (1u << 12)
#define RESET_UART0 (1u << 22)

#define XOSC_CTRL REG32(0x40024000u)
#define XOSC_STATUS REG32(0x40024004u)
#define XOSC_STARTUP REG32(0x4002400Cu)
#define XOSC_CTRL_1_15MHZ 0xAA0u
#define XOSC_CTRL_ENABLE (0xFABu << 12)
#define XOSC_STATUS_STABLE (1u << 31)
#define XOSC_STARTUP_DELAY 47u /* (12 MHz / 1000 + 128) / 256: about 1 ms */

#define CLOCKS_BASE 0x40008000u
#define CLK_REF_CTRL REG32(CLOCKS_BASE + 0x30u)
#define CLK_REF_SELECTED REG32(CLOCKS_BASE + 0x38u)
#define CLK_SYS_CTRL REG32(CLOCKS_BASE + 0x3Cu)
#define CLK_SYS_SELECTED REG32(CLOCKS_BASE + 0x44u)
#define CLK_PERI_CTRL REG32(CLOCKS_BASE + 0x48u)
#define CLK_REF_SRC_XOSC 2u
#define CLK_SYS_SRC_REF 0u
#define CLK_SYS_SRC_AUX 1u
#define CLK_SYS_AUXSRC_PLL_SYS (0u << 5)
#define CLK_PERI_AUXSRC_CLK_SYS (0u << 5)
#define CLK_PERI_ENABLE (1u << 11)

#define PLL_SYS_CS REG32(0x40028000u)
#define PLL_SYS_PWR REG32(0x40028004u)
#define PLL_SYS_FBDIV_INT REG32(0x40028008u)
#define PLL_SYS_PRIM REG32(0x4002800Cu)
#define PLL_CS_LOCK (1u << 31)
#define PLL_PWR_PD (1u << 0)
#define PLL_PWR_POSTDIVPD (1u << 3)
#define PLL_PWR_VCOPD (1u << 5)
#define PLL_PRIM_POSTDIV1(d) ((uint32_t)(d) << 16)
#define PLL_PRIM_POSTDIV2(d) ((uint32_t)(d) << 12)

#define IO_BANK0_GPIO_CTRL(pin) REG32(0x40014004u + 8u * (pin))
#define GPIO_FUNC_UART 2u

#define UART0_BASE 0x40034000u
#define UART0_IBRD 67u /* 125 MHz / (16 * 115200) = 67.817: 67 + 52/64 */
#define UART0_FBRD 52u

static void unreset(uint32_t blocks)
{
    RESETS_RESET_CLR = blocks;
    while ((RESETS_RESET_DONE & blocks) != blocks) {
    }
}

static void clocks_125mhz(void)
{
    XOSC_CTRL = XOSC_CTRL_1_15MHZ;
    XOSC_STARTUP = XOSC_STARTUP_DELAY;
    XOSC_CTRL = XOSC_CTRL_1_15MHZ | XOSC_CTRL_ENABLE;
    while ((XOSC_STATUS & XOSC_STATUS_STABLE) == 0u) {
    }
    CLK_REF_CTRL = CLK_REF_SRC_XOSC;
    while (CLK_REF_SELECTED != (1u << CLK_REF_SRC_XOSC)) {
    }
    /* off the PLL (the boot ROM may run clk_sys from PLL_USB) before PLL_SYS is reset */
    CLK_SYS_CTRL = CLK_SYS_SRC_REF;
    while (CLK_SYS_SELECTED != (1u << CLK_SYS_SRC_REF)) {
    }
    RESETS_RESET_SET = RESET_PLL_SYS;
    unreset(RESET_PLL_SYS);
    PLL_SYS_CS = 1u; /* REFDIV */
    PLL_SYS_FBDIV_INT = 125u;
    PLL_SYS_PWR &= ~(PLL_PWR_PD | PLL_PWR_VCOPD);
    while ((PLL_SYS_CS & PLL_CS_LOCK) == 0u) {
    }
    PLL_SYS_PRIM = PLL_PRIM_POSTDIV1(6) | PLL_PRIM_POSTDIV2(2);
    PLL_SYS_PWR &= ~PLL_PWR_POSTDIVPD;
    CLK_SYS_CTRL = CLK_SYS_AUXSRC_PLL_SYS | CLK_SYS_SRC_REF;
    CLK_SYS_CTRL = CLK_SYS_AUXSRC_PLL_SYS | CLK_SYS_SRC_AUX;
    while (CLK_SYS_SELECTED != (1u << CLK_SYS_SRC_AUX)) {
    }
    CLK_PERI_CTRL = 0u; /* stop it before changing its source */
    CLK_PERI_CTRL = CLK_PERI_ENABLE | CLK_PERI_AUXSRC_CLK_SYS;
}

void board_init(void)
{
    clocks_125mhz();
    unreset(RESET_IO_BANK0 | RESET_PADS_BANK0);
    RESETS_RESET_SET = RESET_UART0;
    unreset(RESET_UART0);
    pl011_init(UART0_BASE, UART0_IBRD, UART0_FBRD);
    IO_BANK0_GPIO_CTRL(0u) = GPIO_FUNC_UART;
    IO_BANK0_GPIO_CTRL(1u) = GPIO_FUNC_UART;
}

void board_console_write(const char *data, size_t length)
{
    pl011_write(UART0_BASE, data, length);
}

void board_console_drain(void)
{
    pl011_drain(UART0_BASE);
}

void board_halt(int status)
{
    (void)status;
    halt_sleep();
}
