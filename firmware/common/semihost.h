/* Minimal ARM semihosting: text output and an exit status that reaches the host. */
#ifndef LSTM_EMBED_SEMIHOST_H
#define LSTM_EMBED_SEMIHOST_H

#include <stdint.h>

void semihost_puts(const char *text);
void semihost_put_i32(int32_t value);
void semihost_put_u32(uint32_t value);
void semihost_flush(void);
void semihost_exit(int status) __attribute__((noreturn));

#endif
