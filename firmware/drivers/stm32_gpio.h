/* STM32 GPIO alternate-function set-up (same MODER/AFR layout on F4 and L4). */
#ifndef LSTM_EMBED_STM32_GPIO_H
#define LSTM_EMBED_STM32_GPIO_H

#include "reg.h"

#define GPIO_MODER(port) REG32((port) + 0x00u)
#define GPIO_AFRL(port) REG32((port) + 0x20u)
#define GPIO_MODE_AF 0x2u

/* Pin (0..7) of the port at `port` to alternate function af. */
static inline void stm32_gpio_af_low(uint32_t port, uint32_t pin, uint32_t af)
{
    GPIO_AFRL(port) = (GPIO_AFRL(port) & ~(0xFu << (4u * pin))) | (af << (4u * pin));
    GPIO_MODER(port) = (GPIO_MODER(port) & ~(0x3u << (2u * pin))) | (GPIO_MODE_AF << (2u * pin));
}

#endif
