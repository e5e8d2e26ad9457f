/* STM32L4 USART, transmit only, 8N1, polled (register map: RM0351 section 40.8). */
#ifndef LSTM_EMBED_STM32L4_USART_H
#define LSTM_EMBED_STM32L4_USART_H

#include <stddef.h>
#include <stdint.h>

void stm32l4_usart_init(uint32_t base, uint32_t pclk_hz, uint32_t baud);
void stm32l4_usart_write(uint32_t base, const char *data, size_t length);
void stm32l4_usart_drain(uint32_t base);

#endif
