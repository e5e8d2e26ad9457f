"""Offline weight layouts of the optimized LSTM kernels (templates/kinds/lstm/), per kind."""
