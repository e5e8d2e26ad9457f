/* STM32L4 USART: the ISR/TDR layout of RM0351 (not the F4's SR/DR). */
#include "stm32l4_usart.h"

#include "reg.h"

#define USART_CR1(base) REG32((base) + 0x00u)
#define USART_BRR(base) REG32((base) + 0x0Cu)
#define USART_ISR(base) REG32((base) + 0x1Cu)
#define USART_TDR(base) REG32((base) + 0x28u)
#define USART_CR1_UE (1u << 0)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_TE (1u << 3)
#define USART_ISR_TC (1u << 6)
#define USART_ISR_TXE (1u << 7)

void stm32l4_usart_init(uint32_t base, uint32_t pclk_hz, uint32_t baud)
{
    USART_CR1(base) = 0u;
    USART_BRR(base) = (pclk_hz + baud / 2u) / baud; /* 16x oversampling */
    USART_CR1(base) = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE;
}

void stm32l4_usart_write(uint32_t base, const char *data, size_t length)
{
    size_t i;
    for (i = 0u; i < length; i++) {
        while ((USART_ISR(base) & USART_ISR_TXE) == 0u) {
        }
        USART_TDR(base) = (uint8_t)data[i];
    }
}

void stm32l4_usart_drain(uint32_t base)
{
    while ((USART_ISR(base) & USART_ISR_TC) == 0u) {
    }
}
