/*
 * Vector table: the 16 core entries plus BOARD_IRQ_COUNT device interrupts (set per board
 * on the compiler command line). No interrupt is enabled by the harness; any exception
 * prints its number and leaves QEMU with status 100 + number.
 */
#include <stdint.h>

#include "console.h"

#ifndef BOARD_IRQ_COUNT
#error "BOARD_IRQ_COUNT must be defined by the board"
#endif

typedef void (*vector_t)(void);

extern uint32_t _estack;
void Reset_Handler(void);
void fault_handler(void);

void fault_handler(void)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    console_puts("\nfault: exception ");
    console_put_u32(ipsr);
    console_puts("\n");
    console_exit((int)(100u + (ipsr & 0xFFu)));
}

__attribute__((section(".isr_vector"), used)) const vector_t vector_table[16 + BOARD_IRQ_COUNT] = {
    [0] = (vector_t)(uintptr_t)&_estack,
    [1] = Reset_Handler,
    [2 ... 15 + BOARD_IRQ_COUNT] = fault_handler,
};
