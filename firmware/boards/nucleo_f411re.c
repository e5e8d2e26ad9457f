/*
 * STM32F411RE (NUCLEO-F411RE): 100 MHz from the PLL fed by HSI (16 MHz), no vendor HAL.
 * PLL: VCO in = 16 MHz / M(8) = 2 MHz, VCO = 2 MHz * N(100) = 200 MHz, SYSCLK = VCO / P(2)
 * = 100 MHz (Q = 4 keeps the 48 MHz domain under its limit). AHB 100 MHz, APB1 /2 = 50 MHz
 * (its maximum), APB2 100 MHz. 100 MHz needs voltage scale 1 and 3 flash wait states
 * (RM0383 table 5, 2.7-3.6 V); the ART accelerator's caches and prefetch are switched on.
 * Console: USART2 on PA2 (TX) / PA3 (RX), AF7, the ST-LINK virtual COM port; 115200 8N1.
 * Register offsets from RM0383. Untested on hardware; the USART driver runs in QEMU
 * (board qemu-stm32f405).
 */
#include <stdint.h>

#include "board.h"
#include "halt.h"
#include "reg.h"
#include "stm32_gpio.h"
#include "stm32f4_usart.h"

#define FLASH_ACR REG32(0x40023C00u)
#define FLASH_ACR_LATENCY_MASK 0xFu
#define FLASH_ACR_LATENCY_3WS 0x3u
#define FLASH_ACR_PRFTEN (1u << 8)
#define FLASH_ACR_ICEN (1u << 9)
#define FLASH_ACR_DCEN (1u << 10)

#define PWR_CR REG32(0x40007000u)
#define PWR_CR_VOS_MASK (0x3u << 14)
#define PWR_CR_VOS_SCALE1 (0x3u << 14)

#define RCC_CR REG32(0x40023800u)
#define RCC_CR_HSION (1u << 0)
#define RCC_CR_HSIRDY (1u << 1)
#define RCC_CR_PLLON (1u << 24)
#define RCC_CR_PLLRDY (1u << 25)
#define RCC_PLLCFGR REG32(0x40023804u)
#define RCC_PLLCFGR_M(m) ((uint32_t)(m) << 0)
#define RCC_PLLCFGR_N(n) ((uint32_t)(n) << 6)
#define RCC_PLLCFGR_P_DIV2 (0u << 16)
#define RCC_PLLCFGR_SRC_HSI (0u << 22)
#define RCC_PLLCFGR_Q(q) ((uint32_t)(q) << 24)
#define RCC_PLLCFGR_RESERVED 0xF0BC8000u /* kept at their reset values (RM0383 6.3.2) */
#define RCC_CFGR REG32(0x40023808u)
#define RCC_CFGR_SW_MASK 0x3u
#define RCC_CFGR_SW_PLL 0x2u
#define RCC_CFGR_SWS_MASK (0x3u << 2)
#define RCC_CFGR_SWS_PLL (0x2u << 2)
#define RCC_CFGR_PPRE1_MASK (0x7u << 10)
#define RCC_CFGR_PPRE1_DIV2 (0x4u << 10)
#define RCC_AHB1ENR REG32(0x40023830u)
#define RCC_AHB1ENR_GPIOAEN (1u << 0)
#define RCC_APB1ENR REG32(0x40023840u)
#define RCC_APB1ENR_USART2EN (1u << 17)
#define RCC_APB1ENR_PWREN (1u << 28)

#define GPIOA_BASE 0x40020000u
#define USART2_BASE 0x40004400u
#define GPIO_AF7_USART2 7u
#define PCLK1_HZ 50000000u
#define CONSOLE_BAUD 115200u

static void clocks_100mhz(void)
{
    RCC_APB1ENR |= RCC_APB1ENR_PWREN;
    (void)RCC_APB1ENR;
    PWR_CR = (PWR_CR & ~PWR_CR_VOS_MASK) | PWR_CR_VOS_SCALE1;
    FLASH_ACR = (FLASH_ACR & ~FLASH_ACR_LATENCY_MASK) | FLASH_ACR_LATENCY_3WS | FLASH_ACR_PRFTEN |
                FLASH_ACR_ICEN | FLASH_ACR_DCEN;
    while ((FLASH_ACR & FLASH_ACR_LATENCY_MASK) != FLASH_ACR_LATENCY_3WS) {
    }
    RCC_CR |= RCC_CR_HSION;
    while ((RCC_CR & RCC_CR_HSIRDY) == 0u) {
    }
    RCC_CR &= ~RCC_CR_PLLON;
    while ((RCC_CR & RCC_CR_PLLRDY) != 0u) {
    }
    RCC_PLLCFGR = (RCC_PLLCFGR & RCC_PLLCFGR_RESERVED) | RCC_PLLCFGR_M(8) | RCC_PLLCFGR_N(100) |
                  RCC_PLLCFGR_P_DIV2 | RCC_PLLCFGR_SRC_HSI | RCC_PLLCFGR_Q(4);
    RCC_CR |= RCC_CR_PLLON;
    while ((RCC_CR & RCC_CR_PLLRDY) == 0u) {
    }
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_PPRE1_MASK) | RCC_CFGR_PPRE1_DIV2;
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_PLL;
    while ((RCC_CFGR & RCC_CFGR_SWS_MASK) != RCC_CFGR_SWS_PLL) {
    }
}

void board_init(void)
{
    clocks_100mhz();
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
    RCC_APB1ENR |= RCC_APB1ENR_USART2EN;
    (void)RCC_APB1ENR; /* the read-back delays the first access to the enabled peripheral */
    stm32_gpio_af_low(GPIOA_BASE, 2u, GPIO_AF7_USART2);
    stm32_gpio_af_low(GPIOA_BASE, 3u, GPIO_AF7_USART2);
    stm32f4_usart_init(USART2_BASE, PCLK1_HZ, CONSOLE_BAUD);
}

void board_console_write(const char *data, size_t length)
{
    stm32f4_usart_write(USART2_BASE, data, length);
}

void board_console_drain(void)
{
    stm32f4_usart_drain(USART2_BASE);
}

void board_halt(int status)
{
    (void)status;
    halt_sleep();
}
