"""The generated C names the kinds it holds: a GRU or SimpleRNN model's files call it a GRU or
SimpleRNN model and carry none of the LSTM's names (its parameter struct, reference step, cell
update), and still compile warning-free on every kernel the host can run."""

from __future__ import annotations

import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from lstm_embed.ir.model import Model
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.targets.hostbuild import STRICT_FLAGS
from lstm_embed.tools.fuzz_layers import LSTMSpec, recurrent_layer

INPUTS, TIMESTEPS = 4, 5
HOST_KERNELS = ("reference", "plain", "dsp")  # the DSP kernel runs on its C fallbacks
# "lstm" as a C name or word, but not the tool's name in the header comment
LSTM_NAME = re.compile(r"lstm(?!-embed)", re.IGNORECASE)

CASES = {
    # id: (recurrent layers (kind, units, weight bits), the title the files must carry)
    "gru": ([("gru", 6, 8)], "GRU"),
    "gru-int16": ([("gru", 6, 16)], "GRU"),
    "simple_rnn": ([("simple_rnn", 6, 8)], "SimpleRNN"),
    "gru-lstm": ([("gru", 6, 8), ("lstm", 5, 8)], "GRU and LSTM"),
}


def _convert(layers: list[tuple[str, int, int]], out: Path) -> Path:
    rng = np.random.default_rng(0)
    chain, size = [], INPUTS
    for k, (kind, units, _) in enumerate(layers):
        last = k == len(layers) - 1
        chain.append(
            recurrent_layer(rng, LSTMSpec(units, kind=kind), f"{kind}_{k}", size, not last)
        )
        size = units
    model = Model("net", INPUTS, TIMESTEPS, tuple(chain), source="test_kind_names")
    calibration = rng.uniform(-1, 1, (32, TIMESTEPS, INPUTS)).astype(np.float32)
    options = QuantizeOptions(weight_bits=tuple(bits for *_, bits in layers))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few calibration sequences: not what this test is about
        convert_ir(model, calibration, out, name="net", options=options, force=True)
    return out


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_generated_c_names_its_kinds(case: str, tmp_path: Path) -> None:
    layers, title = CASES[case]
    out = _convert(layers, tmp_path / "out")
    files = {p.name: p.read_text() for p in sorted(out.glob("net*.[ch]"))}
    assert set(files) == {"net.c", "net.h", "net_weights.h", "net_kernels.h"}
    for name, text in files.items():
        assert f" {title} model 'net'" in text, name
    has_lstm = any(kind == "lstm" for kind, *_ in layers)
    if not has_lstm:
        found = {name: LSTM_NAME.findall(text) for name, text in files.items()}
        assert not any(found.values()), found
    else:
        assert "net_lstm_params_t" in files["net_kernels.h"]
    for kernel in HOST_KERNELS:
        flag = f"-DNET_USE_{kernel.upper()}_KERNEL"
        cmd = ["cc", *STRICT_FLAGS, flag, "-c", str(out / "net.c"), "-o", str(tmp_path / "n.o")]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, (kernel, result.stderr[-2000:])
