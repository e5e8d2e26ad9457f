"""lstm_embed.convert(torch_module, example_input=x): exported through torch.onnx, converted;
skipped where torch is not installed (tests do not need it), except the message without it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import lstm_embed
from lstm_embed.targets.hostbuild import run_host

RANGE_FRACTION = 0.05  # as tests/test_onnx.py: the 5% of the output range


def test_example_input_without_torch_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    x = np.zeros((4, 5, 2), np.float32)
    with pytest.raises(ValueError, match=r"torch modules .*pip install 'lstm-embed\[torch\]'"):
        lstm_embed.convert(object(), x, tmp_path / "out", example_input=x)
    assert not (tmp_path / "out").exists()


def test_torch_module_converts(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1, :])

    net = Net().eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10, 3)).astype(np.float32)
    conversion = lstm_embed.convert(
        net, calibration=x, out_dir=tmp_path / "out", example_input=x[:2]
    )
    assert conversion.ir.streaming
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy().astype(np.float64)
    c_y = run_host(conversion.out_dir, x).astype(np.float64)
    assert np.max(np.abs(c_y - expected)) <= RANGE_FRACTION * np.ptp(expected)
