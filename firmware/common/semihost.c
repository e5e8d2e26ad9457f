/*
 * Console over ARM semihosting (console.h). Output is buffered into lines so that each
 * semihosting trap (SYS_WRITE0) carries many characters; a trap costs far more than the
 * characters under QEMU and on a probe. Without a debugger attached a real core takes the
 * first trap (bkpt 0xAB) as a fault: real boards link uart_console.c unless built with
 * --semihosting.
 */
#include <stddef.h>

#include "console.h"

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

void console_flush(void)
{
    if (semihost_used == 0u) {
        return;
    }
    semihost_line[semihost_used] = '\0';
    (void)semihost_call(SYS_WRITE0, semihost_line);
    semihost_used = 0u;
}

void console_putc(char c)
{
    semihost_line[semihost_used] = c;
    semihost_used++;
    if (c == '\n' || semihost_used == SEMIHOST_LINE_BYTES) {
        console_flush();
    }
}

void console_exit(int status)
{
    /* SYS_EXIT_EXTENDED passes the whole status; plain SYS_EXIT only says pass or fail. */
    uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    console_flush();
    (void)semihost_call(SYS_EXIT_EXTENDED, block);
    (void)semihost_call(SYS_EXIT, (const void *)(uintptr_t)ADP_STOPPED_APPLICATION_EXIT);
    for (;;) {
    }
}
