/*
 * STM32L476RG (NUCLEO-L476RG): 80 MHz from the PLL fed by HSI16, no vendor HAL.
 * Register offsets from RM0351. Untested on hardware.
 * PLL: VCO = 16 MHz / M(1) * N(10) = 160 MHz, SYSCLK = VCO / R(2) = 80 MHz.
 * Flash needs 4 wait states at 80 MHz in voltage range 1 (the reset default).
 */
#include <stdint.h>

#include "board.h"

#define REG32(addr) (*(volatile uint32_t *)(addr))

#define FLASH_ACR REG32(0x40022000u)
#define FLASH_ACR_LATENCY_MASK 0x7u
#define FLASH_ACR_LATENCY_4WS 0x4u
#define FLASH_ACR_PRFTEN (1u << 8)
#define FLASH_ACR_ICEN (1u << 9)
#define FLASH_ACR_DCEN (1u << 10)

#define RCC_CR REG32(0x40021000u)
#define RCC_CR_HSION (1u << 8)
#define RCC_CR_HSIRDY (1u << 10)
#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)
#define RCC_CFGR REG32(0x40021008u)
#define RCC_CFGR_SW_MASK 0x3u
#define RCC_CFGR_SW_PLL 0x3u
#define RCC_CFGR_SWS_PLL (0x3u << 2)
#define RCC_CFGR_SWS_MASK (0x3u << 2)
#define RCC_PLLCFGR REG32(0x4002100Cu)
#define RCC_PLLCFGR_SRC_HSI16 0x2u
#define RCC_PLLCFGR_M_DIV1 (0u << 4)
#define RCC_PLLCFGR_N(n) ((uint32_t)(n) << 8)
#define RCC_PLLCFGR_R_DIV2 (0u << 25)
#define RCC_PLLCFGR_REN (1u << 24)

void board_init(void)
{
    FLASH_ACR = (FLASH_ACR & ~FLASH_ACR_LATENCY_MASK) | FLASH_ACR_LATENCY_4WS | FLASH_ACR_PRFTEN |
                FLASH_ACR_ICEN | FLASH_ACR_DCEN;
    while ((FLASH_ACR & FLASH_ACR_LATENCY_MASK) != FLASH_ACR_LATENCY_4WS) {
    }
    RCC_CR |= RCC_CR_HSION;
    while ((RCC_CR & RCC_CR_HSIRDY) == 0u) {
    }
    RCC_CR &= ~RCC_CR_PLLON;
    while ((RCC_CR & RCC_CR_PLLRDY) != 0u) {
    }
    RCC_PLLCFGR = RCC_PLLCFGR_SRC_HSI16 | RCC_PLLCFGR_M_DIV1 | RCC_PLLCFGR_N(10) |
                  RCC_PLLCFGR_R_DIV2 | RCC_PLLCFGR_REN;
    RCC_CR |= RCC_CR_PLLON;
    while ((RCC_CR & RCC_CR_PLLRDY) == 0u) {
    }
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_PLL;
    while ((RCC_CFGR & RCC_CFGR_SWS_MASK) != RCC_CFGR_SWS_PLL) {
    }
}
