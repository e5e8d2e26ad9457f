/* How a real board ends a run: the core sleeps with interrupts off, the output stays on the
 * terminal. */
#ifndef LSTM_EMBED_HALT_H
#define LSTM_EMBED_HALT_H

static inline void __attribute__((noreturn)) halt_sleep(void)
{
    __asm__ volatile("cpsid i" ::: "memory");
    for (;;) {
        __asm__ volatile("wfi");
    }
}

#endif
