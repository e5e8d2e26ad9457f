#ifndef LSTM_EMBED_REG_H
#define LSTM_EMBED_REG_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

#endif
