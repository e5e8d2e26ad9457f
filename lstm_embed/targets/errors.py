"""The error of the firmware stage, in a module of its own so that the modules the firmware
runner uses (serial_port) can raise it without importing the runner."""

from __future__ import annotations


class FirmwareError(RuntimeError):
    """A firmware build, run or flash failed; the message says why and what to do."""
