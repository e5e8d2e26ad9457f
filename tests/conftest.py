"""Shared test set-up: Keras on the JAX backend, a per-run build cache."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import pytest


@pytest.fixture(scope="session")
def toolchain() -> None:
    """Firmware tests skip without arm-none-eabi-gcc/qemu-system-arm, unless CI requires them."""
    from lstm_embed.targets import firmware

    if firmware.toolchain_available():
        return
    if os.environ.get("LSTM_EMBED_REQUIRE_FIRMWARE"):
        pytest.fail("LSTM_EMBED_REQUIRE_FIRMWARE is set but arm-none-eabi-gcc/qemu is missing")
    pytest.skip("arm-none-eabi-gcc or qemu-system-arm not installed")
