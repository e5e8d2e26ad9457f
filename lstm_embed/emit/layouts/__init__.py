"""Offline weight layouts of the optimized kernels (templates/kernels/), per kind."""
