/*
 * STM32F4 USART (the SR/DR register layout of the F4 family: RM0383 for the STM32F411,
 * RM0090 for the STM32F405 that QEMU's netduinoplus2 models). Shared by nucleo-f411re
 * (USART2) and qemu-stm32f405 (USART1), so the emulated board runs this very code.
 */
#include "stm32f4_usart.h"

#include "reg.h"

#define USART_SR(base) REG32((base) + 0x00u)
#define USART_DR(base) REG32((base) + 0x04u)
#define USART_BRR(base) REG32((base) + 0x08u)
#define USART_CR1(base) REG32((base) + 0x0Cu)
#define USART_SR_TC (1u << 6)
#define USART_SR_TXE (1u << 7)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_UE (1u << 13)

void stm32f4_usart_init(uint32_t base, uint32_t pclk_hz, uint32_t baud)
{
    USART_CR1(base) = 0u;
    /* 16x oversampling: BRR holds pclk / baud in units of 1/16 (mantissa << 4 | fraction),
     * which is the quotient itself, rounded. */
    USART_BRR(base) = (pclk_hz + baud / 2u) / baud;
    USART_CR1(base) = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE;
}

void stm32f4_usart_write(uint32_t base, const char *data, size_t length)
{
    size_t i;
    for (i = 0u; i < length; i++) {
        while ((USART_SR(base) & USART_SR_TXE) == 0u) {
        }
        USART_DR(base) = (uint8_t)data[i];
    }
}

void stm32f4_usart_drain(uint32_t base)
{
    while ((USART_SR(base) & USART_SR_TC) == 0u) {
    }
}
