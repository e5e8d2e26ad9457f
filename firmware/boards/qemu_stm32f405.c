/*
 * QEMU netduinoplus2 (STM32F405, Cortex-M4F): the STM32F4 USART driver of nucleo-f411re,
 * on USART1, the USART that QEMU connects to its first -serial. QEMU 7.2 models no RCC or
 * GPIO (the writes below go to unimplemented-device regions and are ignored), so the clock
 * is the reset HSI, 16 MHz, and no PLL is waited for (its ready bit would never rise).
 * The run ends with a semihosting exit, so QEMU's exit status is main's return value; the
 * output itself goes through the USART only.
 */
#include <stdint.h>

#include "board.h"
#include "reg.h"
#include "stm32f4_usart.h"

#define RCC_AHB1ENR REG32(0x40023830u)
#define RCC_AHB1ENR_GPIOAEN (1u << 0)
#define RCC_APB2ENR REG32(0x40023844u)
#define RCC_APB2ENR_USART1EN (1u << 4)
#define GPIOA_BASE 0x40020000u
#define USART1_BASE 0x40011000u
#define GPIO_AF7_USART1 7u
#define PCLK2_HZ 16000000u
#define CONSOLE_BAUD 115200u

#define SYS_EXIT 0x18u
#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

void board_init(void)
{
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
    RCC_APB2ENR |= RCC_APB2ENR_USART1EN;
    /* PA9/PA10 are USART1's pins on the STM32F405; AFRH, so set directly here */
    REG32(GPIOA_BASE + 0x24u) = (REG32(GPIOA_BASE + 0x24u) & ~0xFF0u) | (GPIO_AF7_USART1 << 4) |
                                (GPIO_AF7_USART1 << 8);
    REG32(GPIOA_BASE) = (REG32(GPIOA_BASE) & ~(0xFu << 18)) | (0xAu << 18);
    stm32f4_usart_init(USART1_BASE, PCLK2_HZ, CONSOLE_BAUD);
}

void board_console_write(const char *data, size_t length)
{
    stm32f4_usart_write(USART1_BASE, data, length);
}

void board_console_drain(void)
{
    stm32f4_usart_drain(USART1_BASE);
}

static void semihost_call(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
}

void board_halt(int status)
{
    uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    semihost_call(SYS_EXIT_EXTENDED, block);
    semihost_call(SYS_EXIT, (const void *)(uintptr_t)ADP_STOPPED_APPLICATION_EXIT);
    for (;;) {
    }
}
