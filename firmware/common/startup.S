/*
 * Reset handler shared by every board (ARMv6-M, ARMv7-M, ARMv8-M, ARMv8.1-M).
 * Only Thumb-1 instructions are used outside the FPU block so one file serves the M0 too.
 * Order matters: the FPU (and MVE on M55) is enabled before any C code runs, because
 * GCC may use FP registers in any function built with -mfloat-abi=hard.
 */
    .syntax unified
    .thumb

    .section .text.Reset_Handler, "ax", %progbits
    .global Reset_Handler
    .type Reset_Handler, %function
    .thumb_func
Reset_Handler:
    ldr   r0, =_estack          /* also right when a loader did not use vector 0 */
    mov   sp, r0

#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
    ldr   r0, =0xE000ED88       /* SCB->CPACR */
    ldr   r1, [r0]
    ldr   r2, =0x00F00000       /* CP10 and CP11: full access */
    orrs  r1, r1, r2
    str   r1, [r0]
    dsb
    isb
#endif

    ldr   r0, =_sidata          /* .data: copy initial values from flash */
    ldr   r1, =_sdata
    ldr   r2, =_edata
copy_data:
    cmp   r1, r2
    bhs   zero_bss_start
    ldr   r3, [r0]
    str   r3, [r1]
    adds  r0, r0, #4
    adds  r1, r1, #4
    b     copy_data

zero_bss_start:
    ldr   r1, =_sbss
    ldr   r2, =_ebss
    movs  r3, #0
zero_bss:
    cmp   r1, r2
    bhs   start_c
    str   r3, [r1]
    adds  r1, r1, #4
    b     zero_bss

start_c:
    bl    board_init
    bl    main
    bl    console_exit          /* main's return value: the QEMU exit status, or "exit N" */
hang:
    b     hang

    .size Reset_Handler, . - Reset_Handler
    .pool
