/*
 * DWT cycle counter. Real silicon counts core clock cycles; QEMU does not emulate CYCCNT
 * (it reads 0), and ARMv6-M (Cortex-M0) has no CYCCNT at all, so both report 0.
 */
#ifndef LSTM_EMBED_CYCLES_H
#define LSTM_EMBED_CYCLES_H

#include <stdint.h>

void cycles_init(void);
uint32_t cycles_now(void);

#endif
