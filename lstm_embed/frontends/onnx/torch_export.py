"""A live torch module -> a temporary .onnx file, through torch.onnx (only when the caller
hands lstm-embed a torch module: conversion of files never imports torch)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = "pip install 'lstm-embed[torch]' (torch and onnxscript)"


class TorchExportError(ValueError):
    """torch is missing, or torch.onnx could not export the module; one line."""


def is_torch_module(model: Any) -> bool:
    """Without importing torch: a torch module exists only if torch is already imported."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def export(module: Any, example_input: Any, path: Path) -> Path:
    """``module`` in eval mode exported with torch.onnx on ``example_input`` (N, T, m) or
    (T, N, m) as the module takes it. The TorchScript-based exporter first (it keeps nn.RNN
    as one RNN node), the dynamo exporter when torch no longer has it."""
    try:
        import torch
    except ImportError:
        raise TorchExportError(
            f"lstm_embed.convert of a torch module needs torch: {INSTALL_HINT}"
        ) from None
    example = torch.as_tensor(np.asarray(example_input, np.float32))
    was_training = module.training
    module.eval()
    try:
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17)
        except Exception as first:
            try:
                program = torch.onnx.export(module, (example,), dynamo=True, external_data=False)
                program.save(str(path))
            except ImportError:
                raise TorchExportError(
                    f"torch.onnx could not export the module ({first}); {INSTALL_HINT}"
                ) from None
            except Exception as error:
                detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
                raise TorchExportError(
                    f"torch.onnx could not export the module: {detail}"
                ) from None
    finally:
        module.train(was_training)
    return path
