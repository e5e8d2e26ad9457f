/*
 * DWT cycle counter. Real silicon counts core clock cycles; QEMU does not emulate CYCCNT
 * (it reads 0), and ARMv6-M (Cortex-M0) has no CYCCNT at all, so both report 0.
 */
#ifndef LSTM_EMBED_CYCLES_H
#define LSTM_EMBED_CYCLES_H

#include <stdint.h>

/* ARMv7-M and ARMv8-M mainline cores (M3/M4/M7/M33/M55) have the DWT cycle counter; ARMv6-M
 * (M0/M0+) has none. */
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || \
    defined(__ARM_ARCH_8_1M_MAIN__)
#define CYCLES_HAVE_DWT 1
#else
#define CYCLES_HAVE_DWT 0
#endif

void cycles_init(void);
uint32_t cycles_now(void);

#endif
