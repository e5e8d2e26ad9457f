"""Keras .keras/.h5 files (Keras 2 and 3) read as plain data -> the float IR."""
