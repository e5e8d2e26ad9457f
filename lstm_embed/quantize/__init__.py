"""Quantizer: float IR + calibration data -> integer IR (formats, rounding, fixed-point math)."""
