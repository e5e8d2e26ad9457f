/*
 * Output is buffered into lines so that each semihosting trap (SYS_WRITE0) carries many
 * characters; a trap costs far more than the characters under QEMU and on a probe.
 */
#include "semihost.h"

#include <stddef.h>

#define SYS_WRITE0 0x04u
#define SYS_EXIT 0x18u
#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define SEMIHOST_LINE_BYTES 128u

static char semihost_line[SEMIHOST_LINE_BYTES + 1u];
static size_t semihost_used;

static uint32_t semihost_call(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void semihost_flush(void)
{
    if (semihost_used == 0u) {
        return;
    }
    semihost_line[semihost_used] = '\0';
    (void)semihost_call(SYS_WRITE0, semihost_line);
    semihost_used = 0u;
}

static void semihost_putc(char c)
{
    semihost_line[semihost_used] = c;
    semihost_used++;
    if (c == '\n' || semihost_used == SEMIHOST_LINE_BYTES) {
        semihost_flush();
    }
}

void semihost_puts(const char *text)
{
    while (*text != '\0') {
        semihost_putc(*text);
        text++;
    }
}

void semihost_put_u32(uint32_t value)
{
    char digits[10];
    size_t n = 0u;
    do {
        digits[n] = (char)('0' + (value % 10u));
        n++;
        value /= 10u;
    } while (value != 0u);
    while (n > 0u) {
        n--;
        semihost_putc(digits[n]);
    }
}

void semihost_put_i32(int32_t value)
{
    if (value < 0) {
        semihost_putc('-');
        semihost_put_u32(0u - (uint32_t)value);
    } else {
        semihost_put_u32((uint32_t)value);
    }
}

void semihost_exit(int status)
{
    /* SYS_EXIT_EXTENDED passes the whole status; plain SYS_EXIT only says pass or fail. */
    uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    semihost_flush();
    (void)semihost_call(SYS_EXIT_EXTENDED, block);
    (void)semihost_call(SYS_EXIT, (const void *)(uintptr_t)ADP_STOPPED_APPLICATION_EXIT);
    for (;;) {
    }
}
