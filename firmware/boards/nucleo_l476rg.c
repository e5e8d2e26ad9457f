/*
 * STM32L476RG (NUCLEO-L476RG): 80 MHz from the PLL fed by HSI16, no vendor HAL.
 * Console: USART2 on PA2 (TX) / PA3 (RX), AF7, the ST-LINK virtual COM port; 115200 8N1 from
 * PCLK1 = 80 MHz (APB1 undivided, the reset value).
 * Register offsets from RM0351. Untested on hardware.
 * PLL: VCO = 16 MHz / M(1) * N(10) = 160 MHz, SYSCLK = VCO / R(2) = 80 MHz.
 * Flash needs 4 wait states at 80 MHz in voltage range 1 (the reset default).
 */
#include <stdint.h>

#include "board.h"
#include "halt.h"
#include "reg.h"
#include "stm32_gpio.h"
#include "stm32l4_usart.h"

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
#define RCC_AHB2ENR REG32(0x4002104Cu)
#define RCC_AHB2ENR_GPIOAEN (1u << 0)
#define RCC_APB1ENR1 REG32(0x40021058u)
#define RCC_APB1ENR1_USART2EN (1u << 17)

#define GPIOA_BASE 0x48000000u
#define USART2_BASE 0x40004400u
#define GPIO_AF7_USART2 7u
#define SYSCLK_HZ 80000000u
#define CONSOLE_BAUD 115200u

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
    RCC_AHB2ENR |= RCC_AHB2ENR_GPIOAEN;
    RCC_APB1ENR1 |= RCC_APB1ENR1_USART2EN;
    (void)RCC_APB1ENR1; /* the read-back delays the first access to the enabled peripheral */
    stm32_gpio_af_low(GPIOA_BASE, 2u, GPIO_AF7_USART2);
    stm32_gpio_af_low(GPIOA_BASE, 3u, GPIO_AF7_USART2);
    stm32l4_usart_init(USART2_BASE, SYSCLK_HZ, CONSOLE_BAUD);
}

void board_console_write(const char *data, size_t length)
{
    stm32l4_usart_write(USART2_BASE, data, length);
}

void board_console_drain(void)
{
    stm32l4_usart_drain(USART2_BASE);
}

void board_halt(int status)
{
    (void)status;
    halt_sleep();
}
