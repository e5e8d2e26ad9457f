"""GRU layers (lstm_embed/layers/gru.py): Keras semantics, integer arithmetic, trained models.

Oracles: Keras' own predict (Keras 3 in this process, tf_keras in a subprocess for a Keras 2
file), exact integer math in Python ints, and the numpy integer reference that the generated C
must equal bit for bit (host build under the sanitizers, and QEMU M0, M4, M55: the plain, DSP
and MVE kernels). The optimized kernels on odd shapes are in tests/test_kernels.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lstm_embed
from lstm_embed.emit import render as emit
from lstm_embed.frontends.keras.frontend import inspect_rows, load_model, read_spec
from lstm_embed.frontends.keras.layers.gru import read
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.ir.model import DenseLayer, LSTMLayer, Model
from lstm_embed.kinds import Unsupported
from lstm_embed.kinds.gru import (
    GRULayer,
    QGRULayer,
    candidate_preactivation,
    hidden_update,
    reset_hidden,
)
from lstm_embed.pipeline import Conversion, convert_ir
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.reference import interpreter as reference
from lstm_embed.reference.trace import trace_to_arrays
from lstm_embed.targets import firmware
from lstm_embed.targets.hostbuild import SANITIZE_FLAGS, STRICT_FLAGS, run_host
from lstm_embed.tools import bench
from lstm_embed.tools.compare import compare

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
ROOT = Path(__file__).parent.parent
CORES = ("qemu-m0", "qemu-m4", "qemu-m55")  # plain C, DSP, MVE kernels

# The GRU issue, int8 weights on gru_digits (GRU(32) -> Dense(10, softmax)): accuracy within 0.5
# points of Keras, max probability error <= 0.05, mean <= 5e-4 (the LSTM digits' issue-6
# targets); int16 weights: max <= 2e-3 (the LSTM's int16 target).
DIGITS_ACCURACY_POINTS = 0.5
INT8_DIGITS_MAX_ABS = 0.05
INT8_DIGITS_MEAN_ABS = 5e-4
INT16_DIGITS_MAX_ABS = 2e-3
# gru_stacked (GRU(16) -> LSTM(16) -> Dense(1) regressor): the LSTM regressor's int8 target,
# max error <= 1% of the target's range; int16 <= 0.05%.
INT8_REGRESSOR_MAX_PCT = 1.0
INT16_REGRESSOR_MAX_PCT = 0.05
# int8 C vs predict on the small random-weight models written here: weight rounding through two
# layers, 2% of the output range plus 1e-3 (as test_frontend's fixtures).
SMALL_MODEL_RANGE_FRACTION = 0.02
SMALL_MODEL_ABS = 1e-3
FLOAT_FORWARD_TOLERANCE = 1e-5  # float64 IR forward vs float32 predict
QEMU_SEQUENCES = 6


def first_difference(expected: np.ndarray, actual: np.ndarray) -> str:
    if expected.shape != actual.shape:
        return f"shape {actual.shape} != {expected.shape}"
    index = tuple(int(i) for i in np.argwhere(expected != actual)[0])
    return f"first difference at {index}: reference {expected[index]}, C {actual[index]}"


def assert_bit_exact(expected: np.ndarray, actual: np.ndarray, label: str) -> None:
    assert np.array_equal(expected, actual), f"{label}: {first_difference(expected, actual)}"


# ---------------------------------------------------------------------------------------------
# Reading: options refused through the same check as the LSTM's (go_backwards and stateful
# are the generic wrapper's, below)


def _spec(**config) -> LayerSpec:
    n, m = 3, 2
    weights = (np.zeros((m, 3 * n)), np.zeros((n, 3 * n)), np.zeros((2, 3 * n)))
    return LayerSpec("gru", "GRU", {"units": n, **config}, weights)


@pytest.mark.parametrize("option, value", [("return_state", True), ("activation", "sigmoid")])
def test_unsupported_options_are_named(option: str, value) -> None:
    with pytest.raises(Unsupported) as error:
        read(_spec(**{option: value}), 2)
    supported = "tanh or relu or linear" if option == "activation" else "False"
    assert error.value.reasons == [f"{option}={value!r} is not supported (supported: {supported})"]


def test_recurrent_activations_of_both_keras_versions_are_read() -> None:
    for name in ("sigmoid", "hard_sigmoid", "hard_sigmoid_keras2"):
        assert read(_spec(recurrent_activation=name), 2).recurrent_activation == name
    with pytest.raises(Unsupported, match="recurrent_activation='tanh'"):
        read(_spec(recurrent_activation="tanh"), 2)


# ---------------------------------------------------------------------------------------------
# Integer arithmetic against exact math (Python ints)


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


EDGE_Z = [-(2**31) + 1, -(2**31) + 2, -(2**30), -12345, -1, 0, 1, 2**29, 2**30 + 7, 2**31 - 1]
EDGE_Q15 = [-32768, -32767, -16385, -1, 0, 1, 16384, 32766, 32767]


def test_candidate_preactivation_is_exact() -> None:
    """sat32(z_hx + round(r * z_hh / 2^15)) with ties up, over the whole int32 range."""
    rng = np.random.default_rng(0)
    z_hx = np.concatenate([rng.integers(-(2**31) + 1, 2**31, 3000), np.repeat(EDGE_Z, 10)])
    z_hh = np.concatenate([rng.integers(-(2**31) + 1, 2**31, 3000), np.tile(EDGE_Z, 10)])
    r = np.concatenate([rng.integers(0, 32768, 3000), np.tile([0, 1, 16384, 32767, 3], 20)])
    z = np.zeros((len(r), 4), np.int64)
    z[:, 2], z[:, 3] = z_hx, z_hh
    got = candidate_preactivation(z, r)
    limit = 2**31 - 1
    want = [
        max(-limit, min(limit, int(a) + _round_half_up(int(b) * int(c), 2**15)))
        for a, b, c in zip(z_hx, z_hh, r, strict=True)
    ]
    assert got.tolist() == want


def test_hidden_update_is_keras_formula_rounded() -> None:
    """h' = round((z*h + (32768 - z)*h~) / 2^15), ties up: Keras' z*h + (1 - z)*h~ in Q0.15,
    always between h~ and h (no saturation needed)."""
    h = np.array([v for v in EDGE_Q15 for _ in EDGE_Q15 for _ in range(4)])
    candidate = np.array([c for _ in EDGE_Q15 for c in EDGE_Q15 for _ in range(4)])
    z = np.tile([0, 1, 16384, 32767], len(EDGE_Q15) ** 2)
    got = hidden_update(z, h, candidate)
    want = [
        _round_half_up(int(zz) * int(hv) + (32768 - int(zz)) * int(c), 2**15)
        for zz, hv, c in zip(z, h, candidate, strict=True)
    ]
    assert got.tolist() == want
    assert np.all((got >= np.minimum(h, candidate)) & (got <= np.maximum(h, candidate)))


def test_reset_hidden_stays_int16() -> None:
    r, h = np.meshgrid([0, 1, 16383, 32767], EDGE_Q15)
    got = reset_hidden(r.ravel(), h.ravel())
    want = [
        _round_half_up(int(a) * int(b), 2**15) for a, b in zip(r.ravel(), h.ravel(), strict=True)
    ]
    assert got.tolist() == want
    assert got.min() >= fp.INT16_MIN and got.max() <= fp.INT16_MAX


HELPER_TEST = r"""
#include <stdint.h>
#include <stdio.h>
#define T_MAYBE_UNUSED __attribute__((unused))
#define T_INLINE static inline
%(helpers)s
int main(void)
{
    long long zx, zh, r, h, c;
    while (scanf("%%lld %%lld %%lld %%lld %%lld", &zx, &zh, &r, &h, &c) == 5) {
        printf("%%ld %%ld %%d\n", (long)t_gru_reset_mul((int32_t)zh, (int32_t)r),
            (long)t_gru_candidate_z((int32_t)zx, (int32_t)zh, (int32_t)r),
            (int)t_gru_update((int32_t)r, (int32_t)h, (int32_t)c));
    }
    return 0;
}
"""


@pytest.mark.parametrize("arch", ["host", "armv6m"])
def test_c_helpers_equal_exact_math(tmp_path: Path, arch: str) -> None:
    """The C of the GRU helpers (kinds/gru/common.c.j2), also their Cortex-M0 form (the
    16x16 split of z_hh * r), compiled for the host under the sanitizers."""
    helpers = emit.render(
        "kinds/gru/common.c.j2", name="t", NAME="T", z_frac_bits=fp.Z_FRAC_BITS, layers=[]
    )
    source = tmp_path / "helpers.c"
    source.write_text(HELPER_TEST % {"helpers": helpers})
    defines = ["-D__ARM_ARCH_6M__"] if arch == "armv6m" else []
    exe = tmp_path / "helpers"
    cmd = ["cc", *STRICT_FLAGS, *SANITIZE_FLAGS, *defines, str(source), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rng = np.random.default_rng(1)
    rows = [
        (a, b, int(rng.integers(0, 32768)), int(rng.integers(-32768, 32768)), c)
        for a in EDGE_Z[::3]
        for b in EDGE_Z
        for c in (-32767, 0, 32767)
    ]
    rows += [
        (0, b, r, h, c)
        for b in EDGE_Z
        for r in (0, 1, 32767)
        for h in (-32768, 32767)
        for c in (-32767, 5)
    ]
    stdin = "".join(f"{a} {b} {r} {h} {c}\n" for a, b, r, h, c in rows)
    proc = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    limit = 2**31 - 1
    for (zx, zh, r, h, c), line in zip(rows, proc.stdout.splitlines(), strict=True):
        product = _round_half_up(zh * r, 2**15)
        want = [
            product,
            max(-limit, min(limit, zx + product)),
            _round_half_up(r * h + (32768 - r) * c, 2**15),
        ]
        assert [int(v) for v in line.split()] == want, (zx, zh, r, h, c)


# ---------------------------------------------------------------------------------------------
# Keras files: the fixtures (Keras 3 and tf_keras writers; reset_after True and False)


GRU_FIXTURES = [
    (model, kind)
    for model in ("gru", "gru_reset_before")
    for kind in ("k3.keras", "k3.h5", "k2.h5", "k2.keras")
]


def _oracle(model: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(FIXTURES / f"{model}.{kind.split('.')[0]}.npz") as data:
        return data["x"], data["y"]


@pytest.mark.parametrize("model, kind", GRU_FIXTURES)
def test_inspect_counts_params_like_keras(model: str, kind: str) -> None:
    """params = 3*n*(m+n) + bias (2 rows of 3n with reset_after, 1 without) = count_params()."""
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    rows = inspect_rows(read_spec(FIXTURES / f"{model}.{kind}"))
    gru = rows[0]
    assert gru["type"] == "GRU" and not gru["unsupported"]
    assert [r["params"] for r in rows] == manifest["files"][f"{model}.{kind}"]["count_params"]
    bias_rows = 2 if model == "gru" else 1
    assert gru["params_formula"] == f"3*3*(2+3+{bias_rows})"
    assert gru["params"] == 3 * 3 * (2 + 3) + bias_rows * 9


@pytest.fixture(scope="module")
def fixture_conversions(tmp_path_factory) -> dict[tuple[str, str], Conversion]:
    result = {}
    for model, kind in GRU_FIXTURES:
        x, _ = _oracle(model, kind)
        out = tmp_path_factory.mktemp(f"{model}-{kind}") / "out"
        result[model, kind] = lstm_embed.convert(FIXTURES / f"{model}.{kind}", x, out, name="net")
    return result


@pytest.mark.parametrize("model, kind", GRU_FIXTURES)
def test_fixture_c_equals_reference_under_sanitizers(fixture_conversions, model, kind) -> None:
    conversion = fixture_conversions[model, kind]
    x, _ = _oracle(model, kind)
    x_q = fp.quantize_input(x, conversion.qmodel.input_inv_scale)
    c_y = run_host(conversion.out_dir, x_q, sanitize=True)
    assert_bit_exact(reference.run(conversion.qmodel, x_q), c_y, f"{model}.{kind}")
    layer = conversion.qmodel.layers[0]
    assert isinstance(layer, QGRULayer) and layer.reset_after == (model == "gru")


@pytest.mark.firmware
@pytest.mark.parametrize("board", CORES)
def test_keras2_reset_before_fixture_on_qemu(toolchain: None, fixture_conversions, board) -> None:
    """The tf_keras .h5 file with reset_after=False, bit for bit on every kernel family."""
    conversion = fixture_conversions["gru_reset_before", "k2.h5"]
    x, _ = _oracle("gru_reset_before", "k2.h5")
    x_q = fp.quantize_input(x, conversion.qmodel.input_inv_scale)
    y = firmware.run_qemu(conversion.out_dir, board, x_q)
    assert_bit_exact(reference.run(conversion.qmodel, x_q), y, board)


# A Keras 2 (tf_keras) GRU(reset_after=False) with Keras 2's hard_sigmoid (clip(0.2x + 0.5)),
# trained briefly on a fixed-seed task, saved as .h5 with its own predictions.
TF_KERAS_SCRIPT = r"""
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tf_keras as keras
import tensorflow as tf
keras.utils.set_random_seed(5)
tf.config.experimental.enable_op_determinism()
rng = np.random.default_rng(5)
x = rng.normal(size=(512, 9, 3)).astype(np.float32)
y = np.stack([np.tanh(x[:, :, 0].sum(1) / 3), np.sin(x[:, -3:, 1:].sum((1, 2)))], 1)
model = keras.Sequential([
    keras.layers.GRU(12, reset_after=False, recurrent_activation="hard_sigmoid",
                     return_sequences=True, input_shape=(9, 3)),
    keras.layers.GRU(6, reset_after=False, recurrent_activation="hard_sigmoid"),
    keras.layers.Dense(2),
])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
model.fit(x, y.astype(np.float32), epochs=4, batch_size=32, verbose=0)
model.save(sys.argv[1])
x_test = rng.normal(size=(40, 9, 3)).astype(np.float32)
np.savez(sys.argv[2], x=x, x_test=x_test, y_test=model.predict(x_test, verbose=0),
         version=keras.__version__)
"""


@pytest.fixture(scope="module")
def keras2_hard_sigmoid(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("tf_keras")
    model, data = folder / "gru_hard_k2.h5", folder / "gru_hard_k2.npz"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", TF_KERAS_SCRIPT, str(model), str(data)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0 and "No module named 'tf_keras'" in proc.stderr:
        pytest.skip("tf_keras not installed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(data) as arrays:
        return model, {k: arrays[k] for k in arrays.files}


def test_keras2_hard_sigmoid_gru_equals_predict(keras2_hard_sigmoid, tmp_path: Path) -> None:
    """Keras 2's hard_sigmoid slope (0.2, not Keras 3's 1/6) in a reset_before GRU stack: the
    float IR equals tf_keras' predict, the C stays within the int8 tolerance of it, and equals
    the reference bit for bit."""
    path, data = keras2_hard_sigmoid
    assert str(data["version"]).startswith("2.")
    ir = load_model(path)
    assert [la.recurrent_activation for la in ir.recurrent_layers] == ["hard_sigmoid_keras2"] * 2
    assert not any(la.reset_after for la in ir.recurrent_layers)
    from lstm_embed.ir.float_model import forward

    y = data["y_test"]
    np.testing.assert_allclose(forward(ir, data["x_test"])[0], y, atol=FLOAT_FORWARD_TOLERANCE)
    conversion = lstm_embed.convert(path, data["x"], tmp_path / "out", name="net")
    c_y = run_host(conversion.out_dir, data["x_test"])
    limit = SMALL_MODEL_RANGE_FRACTION * float(np.ptp(y)) + SMALL_MODEL_ABS
    assert float(np.max(np.abs(c_y - y))) <= limit
    x_q = fp.quantize_input(data["x_test"], conversion.qmodel.input_inv_scale)
    assert_bit_exact(reference.run(conversion.qmodel, x_q), run_host(conversion.out_dir, x_q), "k2")


# ---------------------------------------------------------------------------------------------
# Trained sample models (lstm_embed.tools.samples: gru_digits, gru_stacked)


@dataclass(frozen=True)
class Trained:
    sample: Any  # lstm_embed.tools.samples.Sample (importing it imports Keras)
    conversion: Conversion
    keras_y: np.ndarray
    c_y: np.ndarray


SETTINGS = {"int8": QuantizeOptions(), "int16": QuantizeOptions(weight_bits=(16,))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Callable[[str, str], Trained]:
    from lstm_embed.tools.samples import sample

    cache: dict[tuple[str, str], Trained] = {}

    def get(name: str, setting: str = "int8") -> Trained:
        if (name, setting) not in cache:
            s = sample(name)
            out = tmp_path_factory.mktemp(f"{name}-{setting}") / "out"
            conversion = lstm_embed.convert(
                s.model, calibration=s.x_train, out_dir=out, name=name, options=SETTINGS[setting]
            )
            keras_y = np.asarray(s.model.predict(s.x_test, verbose=0), np.float64)
            c_y = run_host(out, s.x_test.astype(np.float32)).astype(np.float64)
            cache[name, setting] = Trained(s, conversion, keras_y, c_y)
        return cache[name, setting]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", ["gru_digits", "gru_stacked"])
def test_trained_c_equals_reference(trained, name: str, setting: str) -> None:
    case = trained(name, setting)
    qmodel = case.conversion.qmodel
    assert [la.kind for la in qmodel.recurrent_layers] == (
        ["gru"] if name == "gru_digits" else ["gru", "lstm"]
    )
    x_q = fp.quantize_input(case.sample.x_test, qmodel.input_inv_scale)
    assert_bit_exact(reference.run(qmodel, x_q), run_host(case.conversion.out_dir, x_q), name)
    assert np.array_equal(case.c_y, reference.run_float(qmodel, case.sample.x_test))


@pytest.mark.slow
def test_gru_digits_int8_tolerances(trained) -> None:
    case = trained("gru_digits")
    labels = case.sample.y_test
    keras_acc = 100.0 * np.mean(np.argmax(case.keras_y, -1) == labels)
    c_acc = 100.0 * np.mean(np.argmax(case.c_y, -1) == labels)
    error = np.abs(case.c_y - case.keras_y)
    assert abs(c_acc - keras_acc) <= DIGITS_ACCURACY_POINTS, (keras_acc, c_acc)
    assert error.max() <= INT8_DIGITS_MAX_ABS
    assert error.mean() <= INT8_DIGITS_MEAN_ABS


@pytest.mark.slow
def test_gru_digits_int16_tolerance(trained) -> None:
    case = trained("gru_digits", "int16")
    assert np.max(np.abs(case.c_y - case.keras_y)) <= INT16_DIGITS_MAX_ABS


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting, limit", [("int8", INT8_REGRESSOR_MAX_PCT), ("int16", INT16_REGRESSOR_MAX_PCT)]
)
def test_gru_lstm_stack_tolerance(trained, setting: str, limit: float) -> None:
    case = trained("gru_stacked", setting)
    span = float(np.ptp(case.sample.y_test))
    assert 100.0 * float(np.max(np.abs(case.c_y - case.keras_y))) / span <= limit


@pytest.mark.slow
@pytest.mark.firmware
@pytest.mark.parametrize("board", CORES)
@pytest.mark.parametrize("name", ["gru_digits", "gru_stacked"])
def test_trained_on_qemu(toolchain: None, trained, name: str, board: str) -> None:
    case = trained(name)
    qmodel = case.conversion.qmodel
    x_q = fp.quantize_input(case.sample.x_test[:QEMU_SEQUENCES], qmodel.input_inv_scale)
    y = firmware.run_qemu(case.conversion.out_dir, board, x_q)
    assert_bit_exact(reference.run(qmodel, x_q), y, f"{name} on {board}")


@pytest.mark.slow
def test_trace_follows_every_recurrent_layer(trained) -> None:
    """trace: the GRU's arrays beside the LSTM's, and its traced gates reproduce its hidden
    state with Keras' update h' = z*h + (1 - z)*h~ in exact integers."""
    case = trained("gru_stacked")
    x = case.sample.x_test[:5]
    arrays = trace_to_arrays(case.conversion.out_dir, x)
    gru, lstm = case.conversion.qmodel.recurrent_layers
    g, lg = f"0_{gru.name}", f"1_{lstm.name}"
    assert {f"{g}.z", f"{g}.gates_q15", f"{g}.h_q15"} <= set(arrays)
    assert {f"{lg}.z", f"{lg}.gates_q15", f"{lg}.c", f"{lg}.h_q15"} <= set(arrays)
    assert f"{g}.c" not in arrays
    steps = x.shape[1]
    assert arrays[f"{g}.z"].shape == (5, steps, gru.units, 4)  # rows z, r, hx, hh
    h = arrays[f"{g}.h_q15"].astype(np.int64)
    gates = arrays[f"{g}.gates_q15"].astype(np.int64)
    h_prev = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
    z, candidate = gates[..., 0], gates[..., 2]
    expected = (z * h_prev + (32768 - z) * candidate + 16384) >> 15
    assert np.array_equal(h, expected)


@pytest.mark.slow
def test_compare_report_covers_the_gru(trained, tmp_path: Path) -> None:
    """compare's per-layer section: the GRU's h error per step (it has no cell), the LSTM's h
    and c after it."""
    case = trained("gru_stacked")
    model_path = tmp_path / "gru_stacked.keras"
    case.sample.model.save(model_path)
    result = compare(
        model_path, case.conversion.out_dir, case.sample.x_test[:40], report_dir=tmp_path / "r"
    )
    layers = result["json"]["layers"]
    names = [la.name for la in case.conversion.qmodel.recurrent_layers]
    assert [la["layer"] for la in layers] == names
    assert "c_error" not in layers[0] and "c_error" in layers[1]
    assert len(layers[0]["h_error"]["max"]) == case.sample.x_test.shape[1]
    # the GRU's h error as the trace and the float forward pass give it
    from lstm_embed.ir.float_model import forward

    x = case.sample.x_test[:40]
    h = trace_to_arrays(case.conversion.out_dir, x)[f"0_{names[0]}.h_q15"] * 2.0**-15
    float_h = forward(case.conversion.ir, x.astype(np.float64))[1][0].output
    assert np.isclose(layers[0]["h_max_abs_error"], np.max(np.abs(h - float_h)))
    report = (tmp_path / "r" / "report.md").read_text()
    assert names[0] in report
    calibration = case.conversion.report["calibration"]["recurrent_layers"]
    assert [la["type"] for la in calibration] == ["GRU", "LSTM"]
    assert set(calibration[0]["gate_preactivation_max_abs"]) == {"z", "r", "hx", "hh"}


# ---------------------------------------------------------------------------------------------
# go_backwards and stateful: the wrapper every recurrent kind reads through


def _keras_options_model(label: str):
    """Random-weight Keras 3 models: GRU(go_backwards) returning its reversed sequence, and a
    stateful stack (batch 1) with both GRU forms, one of them also going backwards."""
    import keras

    keras.utils.set_random_seed(9)
    layers = keras.layers
    if label == "go_backwards":
        body = [
            keras.Input((6, 3)),
            layers.GRU(7, go_backwards=True, return_sequences=True),
            layers.Dense(2),
        ]
    else:
        body = [
            keras.Input(batch_shape=(1, 4, 3)),
            layers.GRU(6, stateful=True, return_sequences=True),
            layers.GRU(5, stateful=True, go_backwards=True, reset_after=False),
            layers.Dense(2),
        ]
    model = keras.Sequential(body)
    rng = np.random.default_rng(9)
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("label", ["go_backwards", "stateful"])
def test_go_backwards_and_stateful_gru_equal_predict(tmp_path: Path, label: str) -> None:
    """Keras' semantics through the generic wrapper (layers/common.RecurrentOptions): the
    reversed read and output order, and a stateful model's rows as one stream (Keras'
    predict(x, batch_size=1)); the C within the small models' tolerance of predict and equal to
    the reference bit for bit under the sanitizers."""
    model = _keras_options_model(label)
    x = np.random.default_rng(10).normal(size=(5, *model.input_shape[1:])).astype(np.float32)
    keras_y = np.asarray(model.predict(x, verbose=0, batch_size=1 if label == "stateful" else 32))
    conversion = lstm_embed.convert(model, calibration=x, out_dir=tmp_path / "out", name="net")
    c_y = run_host(conversion.out_dir, x)
    limit = SMALL_MODEL_RANGE_FRACTION * float(np.ptp(keras_y)) + SMALL_MODEL_ABS
    assert float(np.max(np.abs(c_y - keras_y))) <= limit
    x_q = fp.quantize_input(x, conversion.qmodel.input_inv_scale)
    expected = reference.run(conversion.qmodel, x_q)
    assert_bit_exact(expected, run_host(conversion.out_dir, x_q, sanitize=True), label)


# ---------------------------------------------------------------------------------------------
# GRU and LSTM stacked in any order; exact to one accumulator unit on the optimized kernels


def _random_gru(rng, name, m, n, reset_after, sequences, activation="sigmoid") -> GRULayer:
    limit_in, limit_rec = np.sqrt(6 / (m + 3 * n)), np.sqrt(3 / n)
    bias = rng.uniform(-0.3, 0.3, (2, 3 * n) if reset_after else (3 * n,))
    kernel = rng.uniform(-limit_in, limit_in, (m, 3 * n)) * 2
    recurrent = rng.uniform(-limit_rec, limit_rec, (n, 3 * n))
    return GRULayer(name, m, n, kernel, recurrent, bias, reset_after, activation, sequences)


def _random_lstm(rng, name, m, n, sequences) -> LSTMLayer:
    limit = np.sqrt(6 / (m + 4 * n))
    kernel = rng.uniform(-limit, limit, (m, 4 * n))
    recurrent = rng.uniform(-limit, limit, (n, 4 * n))
    return LSTMLayer(
        name, m, n, kernel, recurrent, rng.uniform(-0.3, 0.3, 4 * n), "sigmoid", sequences
    )


STACKS = {
    "lstm-gru": lambda rng: [
        _random_lstm(rng, "l0", 5, 9, True),
        _random_gru(rng, "g1", 9, 6, True, False),
    ],
    "gru_b-lstm-gru": lambda rng: [
        _random_gru(rng, "g0", 5, 7, False, True, "hard_sigmoid"),
        _random_lstm(rng, "l1", 7, 4, True),
        _random_gru(rng, "g2", 4, 3, True, True, "hard_sigmoid"),
    ],
}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory) -> dict[str, tuple[Conversion, np.ndarray]]:
    result = {}
    for k, (label, build) in enumerate(STACKS.items()):
        rng = np.random.default_rng(k)
        layers = build(rng)
        head = DenseLayer("d", layers[-1].units, 2, rng.uniform(-1, 1, (layers[-1].units, 2)), None)
        ir = Model("net", 5, 8, (*layers, head), source=f"test_gru stack {label}")
        x = rng.normal(size=(24, 8, 5)).astype(np.float32)
        out = tmp_path_factory.mktemp(label) / "out"
        result[label] = (convert_ir(ir, x, out, name="net"), x)
    return result


@pytest.mark.parametrize("label", STACKS)
def test_stacks_in_any_order_equal_reference_under_sanitizers(stacks, label: str) -> None:
    conversion, x = stacks[label]
    x_q = fp.quantize_input(x * 2, conversion.qmodel.input_inv_scale)  # beyond calibration too
    expected = reference.run(conversion.qmodel, x_q)
    assert_bit_exact(expected, run_host(conversion.out_dir, x_q, sanitize=True), label)


@pytest.mark.firmware
@pytest.mark.parametrize("board", CORES)
@pytest.mark.parametrize("label", STACKS)
def test_stacks_on_qemu(toolchain: None, stacks, label: str, board: str) -> None:
    conversion, x = stacks[label]
    x_q = fp.quantize_input(x[:4] * 2, conversion.qmodel.input_inv_scale)
    y = firmware.run_qemu(conversion.out_dir, board, x_q)
    assert_bit_exact(reference.run(conversion.qmodel, x_q), y, f"{label} on {board}")


def _sensitive(layer: QGRULayer) -> QGRULayer:
    """Small biases, no recurrent weights and z = acc * 2^5 (multiplier 2^30, shift 25) on
    every row: an error of one accumulator unit in any row sum changes the outputs (ordinary
    layers round it away)."""
    rng = np.random.default_rng(5)
    rows = layer.bias_s32.shape
    weights = layer.weights.copy()
    weights[..., layer.input_size :] = 0
    return dataclasses.replace(
        layer,
        weights=weights,
        bias_s32=rng.integers(-50, 51, rows).astype(np.int32),
        multiplier=np.full(rows, 2**30, dtype=np.int64),
        shift=np.full(rows, 25, dtype=np.int64),
    )


@pytest.mark.firmware
@pytest.mark.parametrize("board", CORES)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_exact_to_one_accumulator_unit(toolchain: None, tmp_path: Path, board, reset_after) -> None:
    """Folded biases, the split candidate row and the scaled input part are off by no unit: a
    7-input, 13-unit layer with input shift 2, tiny inputs, optimized kernel vs numpy."""
    shape = bench.Shape(
        "gru sensitive", 7, (13,), layer="gru", input_shift=2, reset_after=reset_after
    )
    qmodel = bench.convert_shape(shape, tmp_path / "converted").qmodel
    qmodel = dataclasses.replace(qmodel, layers=(_sensitive(qmodel.layers[0]), *qmodel.layers[1:]))
    emit.emit_model(qmodel, tmp_path, bench.NAME)
    x = np.random.default_rng(6).integers(-4, 5, (5, 7)).astype(np.int16)
    states = reference.initial_state(qmodel, 1)
    expected = np.array([reference.step(qmodel, states, x[None, t])[0] for t in range(len(x))])
    assert len(np.unique(expected)) > 5  # the outputs move with the sums
    y, _ = bench.run_outputs(tmp_path, board, x, "optimized", tmp_path / "build")
    assert_bit_exact(expected.astype(np.int16), y, f"sensitive GRU on {board}")
