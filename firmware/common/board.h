/* Called by Reset_Handler after .data/.bss set-up and before main. */
#ifndef LSTM_EMBED_BOARD_H
#define LSTM_EMBED_BOARD_H

void board_init(void);

#endif
