"""Targets: host builds, Cortex-M boards and QEMU, flashing, and the Python runtime handle."""
