#include "cycles.h"

#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CTRL_CYCCNTENA 1u
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DWT_LAR (*(volatile uint32_t *)0xE0001FB0u)
#define DWT_LAR_UNLOCK 0xC5ACCE55u

void cycles_init(void)
{
#if CYCLES_HAVE_DWT
    DEMCR |= DEMCR_TRCENA;
    DWT_LAR = DWT_LAR_UNLOCK; /* needed on some M7 parts, ignored elsewhere */
    DWT_CYCCNT = 0u;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
#endif
}

uint32_t cycles_now(void)
{
#if CYCLES_HAVE_DWT
    return DWT_CYCCNT;
#else
    return 0u;
#endif
}
