/* QEMU machines start with their clocks running; nothing to set up. */
#include "board.h"

void board_init(void)
{
}
