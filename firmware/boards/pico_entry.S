/*
 * Raspberry Pi Pico, SRAM-loaded image: the RP2040 boot ROM starts a UF2 written to SRAM by
 * jumping to its first byte (0x20000000) in Thumb state, with whatever VTOR and stack the ROM
 * left. This stub, placed first by the linker script, points VTOR at the vector table and
 * enters Reset_Handler through it, as a reset would.
 */
    .syntax unified
    .thumb

    .section .entry, "ax", %progbits
    .global pico_entry
    .type pico_entry, %function
    .thumb_func
pico_entry:
    ldr   r0, =vector_table
    ldr   r1, =0xE000ED08       /* SCB->VTOR */
    str   r0, [r1]
    ldr   r1, [r0]              /* initial stack pointer */
    mov   sp, r1
    ldr   r1, [r0, #4]          /* Reset_Handler */
    bx    r1
    .size pico_entry, . - pico_entry
    .pool
