/*
 * nRF52840 (nRF52840-DK): the core always runs at 64 MHz; starting the external 32 MHz
 * crystal makes that clock accurate, and the instruction cache makes flash reads fast.
 * Register offsets from the nRF52840 Product Specification v1.7. Untested on hardware.
 */
#include <stdint.h>

#include "board.h"

#define REG32(addr) (*(volatile uint32_t *)(addr))

#define CLOCK_TASKS_HFCLKSTART REG32(0x40000000u)
#define CLOCK_EVENTS_HFCLKSTARTED REG32(0x40000100u)
#define NVMC_ICACHECNF REG32(0x4001E540u)
#define NVMC_ICACHECNF_CACHEEN 1u

void board_init(void)
{
    NVMC_ICACHECNF = NVMC_ICACHECNF_CACHEEN;
    CLOCK_EVENTS_HFCLKSTARTED = 0u;
    CLOCK_TASKS_HFCLKSTART = 1u;
    while (CLOCK_EVENTS_HFCLKSTARTED == 0u) {
    }
}
