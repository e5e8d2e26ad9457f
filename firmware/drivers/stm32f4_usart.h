/* STM32F4 USART, transmit only, 8N1, polled (register map: RM0383 section 19.6, RM0090 30.6). */
#ifndef LSTM_EMBED_STM32F4_USART_H
#define LSTM_EMBED_STM32F4_USART_H

#include <stddef.h>
#include <stdint.h>

void stm32f4_usart_init(uint32_t base, uint32_t pclk_hz, uint32_t baud);
void stm32f4_usart_write(uint32_t base, const char *data, size_t length);
void stm32f4_usart_drain(uint32_t base);

#endif
