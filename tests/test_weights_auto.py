"""--weights auto (issue 22, part 4): per layer int8 or int16, the least flash whose max error
against the float model stays under --max-error percent of the output range. The oracles:
Keras' predict (digits sample) and the float model on fresh inputs the choice never saw, each
against the compiled C.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import DenseLayer, LSTMLayer, Model
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.targets.hostbuild import run_host


def _error_pct(expected: np.ndarray, measured: np.ndarray) -> float:
    """Max abs error in percent of the expected outputs' range (the option's measure)."""
    span = float(np.max(expected) - np.min(expected))
    return 100.0 * float(np.max(np.abs(measured - expected))) / span


def test_digits_picks_int8_for_every_layer(tmp_path: Path, capsys) -> None:
    """The digits sample (LSTM(32) -> Dense(10, softmax)) calibrated on 512 training digits:
    int8 everywhere meets 1% on the held-out quarter. The error report.json states is the C's
    error against Keras there, with ranges calibrated on the other three quarters."""
    from lstm_embed.pipeline import convert
    from lstm_embed.quantize.calibration import held_out_split
    from lstm_embed.tools.samples import sample

    s = sample("digits")
    x = s.x_train[:512]
    s.model.save(tmp_path / "digits.keras")
    np.save(tmp_path / "calibration.npy", x)
    out = tmp_path / "out"
    args = ["convert", tmp_path / "digits.keras", "-c", tmp_path / "calibration.npy", "-o", out,
            "--weights", "auto", "--max-error", "1"]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 0
    printed = capsys.readouterr().out
    choice = json.loads((out / "report.json").read_text())["weights_auto"]
    weighted = [la for la in choice["layers"] if la["weighted"]]
    assert [la["bits"] for la in weighted] == [8, 8] and choice["met"]
    assert choice["error_pct"] <= 1.0 and "held-out calibration" in choice["measured_on"]
    assert "weights auto: lstm int8" in printed and "int16 for" not in printed
    fit, held = held_out_split(len(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert(s.model, x[fit], tmp_path / "fit", options=QuantizeOptions(weight_bits=(8,)))
    c_y, keras_y = run_host(tmp_path / "fit", x[held]), s.model.predict(x[held], verbose=0)
    assert _error_pct(keras_y, c_y) == pytest.approx(choice["error_pct"], rel=1e-3, abs=1e-4)


def _sensitive_head_model() -> Model:
    """LSTM(32) on 8 inputs -> Dense(1, linear) whose row holds one weight of 60 against a unit
    that never changes (its gates see only their biases) and 31 weights below 0.5: the output's
    variation comes from the small weights, which an int8 row (step 60/127) cannot hold. The
    LSTM's rows are ordinary, so int8 costs it little."""
    rng = np.random.default_rng(0)
    m, n = 8, 32
    kernel, rec = rng.uniform(-0.3, 0.3, (m, 4 * n)), rng.uniform(-0.3, 0.3, (n, 4 * n))
    bias = rng.uniform(-0.3, 0.3, 4 * n)
    bias[n : 2 * n] += 1.0
    kernel[:, ::n], rec[:, ::n] = 0.0, 0.0  # unit 0 of each gate: bias only
    bias[::n] = [4.0, -6.0, 1.0, 4.0]  # i, f, g, o: h0 = sigmoid(4) tanh(sigmoid(4) tanh(1))
    lstm = LSTMLayer("lstm", m, n, kernel, rec, bias, "sigmoid", False)
    w = rng.uniform(-0.5, 0.5, (n, 1))
    w[0, 0] = 60.0
    head = DenseLayer("head", n, 1, w, np.array([-60.0 * 0.73]), "linear")
    return Model("net", m, 10, (lstm, head))


def test_int16_for_the_layer_that_needs_it(tmp_path: Path) -> None:
    """int8 everywhere misses 1% by far; auto keeps the LSTM in int8, puts the head in int16
    and says so. On fresh inputs it never saw, the C's error stays under 1% where all-int8's
    does not, with less flash than int16 everywhere."""
    ir = _sensitive_head_model()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(128, 10, 8)).astype(np.float32)
    fresh = rng.normal(size=(200, 10, 8)).astype(np.float32)
    expected, _ = forward(ir, fresh.astype(np.float64))

    def convert(folder: str, **options):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conversion = convert_ir(ir, x, tmp_path / folder, name="net",
                                    options=QuantizeOptions(**options))  # fmt: skip
        return conversion, _error_pct(expected, run_host(tmp_path / folder, fresh))

    auto, auto_error = convert("auto", weights_auto_max_error=1.0)
    _, int8_error = convert("int8", weight_bits=(8,))
    wide, _ = convert("int16", weight_bits=(16,))
    choice = auto.report["weights_auto"]
    assert [la["bits"] for la in choice["layers"]] == [8, 16] and choice["met"]
    assert choice["all_int8_error_pct"] > 1.0 and choice["layers"][1]["int8_alone_error_pct"] > 1
    assert int8_error > 10.0 and auto_error < 1.0
    assert auto.report["flash_bytes"]["total"] < wide.report["flash_bytes"]["total"]
    from lstm_embed.quantize.weight_choice import summary_lines

    assert "weights auto: int16 for head, since int8 there exceeds 1%" in summary_lines(choice)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-error", "2"], "--max-error: only with --weights auto"),
        (["--weights", "auto", "--max-error", "0"], "--max-error: 0 not supported"),
    ],
)
def test_max_error_refusals(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    path = tmp_path / "model.keras"
    path.write_bytes(b"not read: the option is refused first")
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 1), np.float32))
    args = ["convert", str(path), "-c", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o")]
    assert cli.main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
