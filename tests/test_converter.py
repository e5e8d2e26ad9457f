"""Converter: Keras frontend, parameter counts, and host C == numpy reference bit for bit."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.emit.render import model_file_names
from lstm_embed.frontends.keras.frontend import read_keras_model
from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import DenseLayer, Model
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.reference import interpreter as reference
from lstm_embed.targets.hostbuild import STRICT_FLAGS, compiler, run_host

from .helpers import random_inputs, random_lstm, random_model

# Float IR forward vs model.predict: both float, differing only in float32 vs float64 rounding.
FLOAT_FORWARD_TOLERANCE = 1e-5


def keras_model(timesteps, inputs, layers):
    keras.utils.set_random_seed(7)
    return keras.Sequential([keras.Input((timesteps, inputs)), *layers])


@pytest.mark.parametrize(
    "timesteps, inputs, units",
    [(1, 1, 1), (4, 2, 3)],
    ids=["T1-m1-LSTM1", "T4-m2-LSTM3"],
)
def test_inspect_params_equal_keras(tmp_path, capsys, timesteps, inputs, units):
    model = keras_model(timesteps, inputs, [keras.layers.LSTM(units)])
    path = tmp_path / "model.keras"
    model.save(path)
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if " LSTM " in line)
    params = [int(cell) for cell in row.split() if cell.isdigit()]
    assert model.count_params() in params
    assert f"4*{units}*({inputs}+{units}+1)" in row
    assert read_keras_model(model).params == model.count_params()


KERAS_CASES = {
    "stack-hard-sigmoid-softmax": [
        keras.layers.LSTM(6, return_sequences=True, recurrent_activation="hard_sigmoid"),
        keras.layers.Dropout(0.3),
        keras.layers.LSTM(5),
        keras.layers.Dense(7, activation="relu"),
        keras.layers.Dense(3, activation="softmax"),
    ],
    "sequences-no-bias-tanh": [
        keras.layers.LSTM(4, return_sequences=True, use_bias=False),
        keras.layers.Dense(2, activation="tanh", use_bias=False),
    ],
    "sigmoid-head": [keras.layers.LSTM(3), keras.layers.Dense(1, activation="sigmoid")],
}


@pytest.mark.parametrize("case", KERAS_CASES, ids=list(KERAS_CASES))
def test_frontend_reads_keras_semantics(case):
    """The IR read from Keras, run in float, reproduces model.predict (weights, gate order,
    activations, return_sequences, Dense per timestep), and counts the same parameters."""
    model = keras_model(6, 4, KERAS_CASES[case])
    x = random_inputs(3, 16, 6, 4)
    ir = read_keras_model(model)
    y, _ = forward(ir, x)
    np.testing.assert_allclose(y, model.predict(x, verbose=0), atol=FLOAT_FORWARD_TOLERANCE)
    assert ir.params == model.count_params()


# Shapes from issue 2: units 1/3/8/32/64, inputs 1/2/6, T 1/4/50, stacks of 1-3, return_sequences
# on and off, with and without bias, both recurrent activations, every Dense activation.
SHAPES = [
    dict(inputs=1, units=[1], timesteps=1),
    dict(inputs=2, units=[3], timesteps=4, recurrent="hard_sigmoid"),
    dict(inputs=6, units=[8], timesteps=50, bias=False),
    dict(inputs=1, units=[32], timesteps=4, return_sequences=True),
    dict(inputs=6, units=[64], timesteps=4, dense=[(10, "softmax")]),
    dict(inputs=2, units=[8, 3], timesteps=50, dense=[(4, "relu"), (2, "linear")]),
    dict(inputs=6, units=[3, 8, 32], timesteps=4, return_sequences=True, dense=[(3, "tanh")]),
    dict(inputs=1, units=[64, 1], timesteps=1, recurrent="hard_sigmoid", dense=[(1, "sigmoid")]),
    dict(inputs=2, units=[1, 1, 1], timesteps=50, bias=False, recurrent="hard_sigmoid"),
    dict(inputs=6, units=[32], timesteps=None, dense=[(5, "linear")]),
]


def shape_id(shape: dict) -> str:
    parts = [f"m{shape['inputs']}", "u" + "-".join(map(str, shape["units"]))]
    parts.append(f"T{shape['timesteps'] or 'any'}")
    parts += [f"{n}{a}" for n, a in shape.get("dense", [])]
    parts += [k for k in ("return_sequences",) if shape.get(k)]
    parts += ["nobias"] if shape.get("bias") is False else []
    parts += ["hard"] if shape.get("recurrent") == "hard_sigmoid" else []
    return "_".join(parts)


@pytest.mark.parametrize("sanitize", [False, True], ids=["strict", "asan-ubsan"])
@pytest.mark.parametrize("shape", SHAPES, ids=[shape_id(s) for s in SHAPES])
def test_host_c_equals_reference(tmp_path, shape, sanitize):
    """Host C built with -std=c99 -Wall -Wextra -Wconversion -Werror (and with ASan/UBSan)
    gives exactly the numpy reference's integers, on quantized and on float inputs."""
    seed = SHAPES.index(shape)
    model = random_model(seed, **shape)
    steps = shape["timesteps"] or 7
    x = random_inputs(seed, 24, steps, shape["inputs"])
    conversion = convert_ir(model, x, tmp_path / "out")
    # beyond the calibration range too: saturation paths must agree as well
    x_test = np.concatenate([x, 3 * random_inputs(seed + 1, 8, steps, shape["inputs"])])
    x_q = fp.quantize_input(x_test, conversion.qmodel.input_inv_scale)
    expected = reference.run(conversion.qmodel, x_q)
    actual = run_host(tmp_path / "out", x_q, sanitize=sanitize)
    assert_bit_exact(expected, actual)
    y_f32 = run_host(tmp_path / "out", x_test, sanitize=sanitize)
    assert np.array_equal(y_f32, reference.run_float(conversion.qmodel, x_test))


def assert_bit_exact(expected: np.ndarray, actual: np.ndarray) -> None:
    assert expected.shape == actual.shape
    mismatch = np.argwhere(expected != actual)
    if mismatch.size:
        index = tuple(mismatch[0])
        pytest.fail(
            f"{len(mismatch)} values differ; first at index {index}:"
            f" reference {expected[index]} vs C {actual[index]}"
        )


def test_step_streaming_equals_run(tmp_path):
    """Streaming one step at a time (reference.step) gives run()'s outputs at every step."""
    model = random_model(5, inputs=3, units=[8, 4], timesteps=None, return_sequences=True)
    x = random_inputs(5, 4, 30, 3)
    qmodel = convert_ir(model, x, tmp_path / "out").qmodel
    x_q = fp.quantize_input(x, qmodel.input_inv_scale)
    states = reference.initial_state(qmodel, 4)
    streamed = np.stack([reference.step(qmodel, states, x_q[:, t]) for t in range(30)], axis=1)
    assert np.array_equal(streamed, reference.run(qmodel, x_q))
    assert np.array_equal(streamed, run_host(tmp_path / "out", x_q))


def test_generated_files_have_header_and_const_weights(tmp_path):
    model = random_model(1, inputs=2, units=[3], timesteps=4, dense=[(2, "softmax")])
    convert_ir(model, random_inputs(1, 8, 4, 2), tmp_path / "out", name="har")
    texts = {f: (tmp_path / "out" / f).read_text() for f in model_file_names("har")}
    assert list(texts) == ["har.h", "har.c", "har_weights.h", "har_kernels.h"]
    for text in texts.values():
        assert "DO NOT EDIT" in text and "lstm-embed 0.1.0" in text and "random model" in text
    assert "static const int8_t har_lstm0_weights_s8[60]" in texts["har_weights.h"]
    source = "".join(texts.values())
    assert "malloc" not in source and "#include <math.h>" not in source
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["flash_bytes"]["weights"] == 4 * 3 * (2 + 3) + 3 * 2
    assert report["ram_bytes"]["state"] == 2 * 2 * 3


def test_weights_and_kernels_have_files_of_their_own(tmp_path):
    """NAME.c includes NAME_weights.h (every constant array, each layer's under its comment)
    and NAME_kernels.h (the helpers and kernels), once each, after its kernel selection; it
    holds the layer parameters (designated initializers) and the entry points. Neither is a
    public header: included without NAME.c it stops the compile; a second include is
    harmless."""
    model = random_model(2, inputs=3, units=[4], timesteps=5, dense=[(2, "relu")])
    out = tmp_path / "out"
    convert_ir(model, random_inputs(2, 8, 5, 3), out, name="net", core="all")
    source, weights, kernels = (
        (out / f).read_text() for f in ("net.c", "net_weights.h", "net_kernels.h")
    )
    assert re.findall(r'^#include "(\S+)"', source, re.M) == [
        "net.h",
        "net_weights.h",
        "net_kernels.h",
    ]
    assert source.index("#define NET_KERNEL NET_KERNEL_") < source.index('#include "net_weights')
    array = re.compile(r"^static const \w+ (\w+)\[", re.M)
    assert not array.findall(source) and not array.findall(kernels)
    arrays = set(array.findall(weights))
    assert {"net_tanh_table", "net_input_inv_scale", "net_dense1_weights_s8"} <= arrays
    assert {"net_lstm0_multiplier", "net_lstm0_units", "net_lstm0_weights_u8"} <= arrays
    # designated initializers; the portable rows' weights behind the kernel guard of core "all"
    assert "static const net_dense_params_t net_dense1 = {\n" in source
    assert "    .weights_s8 = net_dense1_weights_s8,\n" in source
    assert "static void net_lstm0_step(" in kernels and "int net_run(" in source
    for text in (source, weights, kernels):
        assert "/* ---- Layer 0: LSTM 'lstm_0', 3 inputs -> 4 units" in text
    for text in (source, weights):
        assert "/* ---- Layer 1: Dense 'dense_0', 4 -> 2, relu\n" in text
    for text in (weights, kernels):
        assert "Not a public header: net.c includes it once" in text
    compile_c = [compiler(), *STRICT_FLAGS, f"-I{out}", "-c", "-o", str(tmp_path / "x.o")]
    twice = '#include "net.c"\n#include "net_weights.h"\n#include "net_kernels.h"\n'
    (tmp_path / "twice.c").write_text(twice)
    proc = subprocess.run([*compile_c, str(tmp_path / "twice.c")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for header in ("net_weights.h", "net_kernels.h"):
        (tmp_path / "alone.c").write_text(f'#include "net.h"\n#include "{header}"\n')
        cmd = [*compile_c, str(tmp_path / "alone.c")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode != 0 and f"{header} is part of net.c" in proc.stderr


def test_activation_tables_accuracy():
    """Interpolated tables against numpy's float functions over their whole input range."""
    z = np.arange(-(20 << fp.Z_FRAC_BITS), 20 << fp.Z_FRAC_BITS, 997)
    u = z / 2.0**fp.Z_FRAC_BITS
    sigmoid = fp.sigmoid_q15(z, fp.build_table("tanh", 8)) / 2**15
    tanh = fp.tanh_q15(z, fp.build_table("tanh", 8)) / 2**15
    # 256 intervals: chord error h^2/8*max|f''| (tanh 9e-5 on [0, 8)) halved by the centred
    # knots, plus 1.5 LSB of Q0.15 rounding; sigmoid = (1 + tanh(z/2)) / 2 halves tanh's error
    assert np.max(np.abs(sigmoid - 1 / (1 + np.exp(-u)))) < 3e-5 + 1.5 / 2**15
    assert np.max(np.abs(tanh - np.tanh(u))) < 5e-5 + 1.5 / 2**15
    # centred: the mean signed error is far below the max (no one-sided drift through the cell)
    assert abs(np.mean(tanh - np.tanh(u))) < 1e-5


def test_quantize_multiplier_is_nearest():
    rng = np.random.default_rng(0)
    for real in np.concatenate([rng.uniform(1e-9, 1e3, 200), [1.0, 0.5, 2.0**-31]]):
        m = fp.quantize_multiplier(float(real))
        assert 2**30 <= m.multiplier < 2**31
        assert abs(m.real - real) <= real * 2.0**-30
    # below 2**-32 the shift is capped at 62: the multiplier shrinks, absolute error < 2**-63
    tiny = fp.quantize_multiplier(2.0**-40 * 1.3)
    assert tiny.shift == fp.MAX_SHIFT and abs(tiny.real - 2.0**-40 * 1.3) <= 2.0**-63


def test_too_wide_for_one_int32_sum_converts_with_int8_and_int16(tmp_path):
    """600 inputs + units could overflow one int32 sum of int8 rows: the int8 layer sums its
    rows in blocks (fixedpoint.blocked_dot_s8) and int16 weights sum in int64; both convert and
    equal the reference (tests/test_long_rows.py covers every kind and core)."""
    from lstm_embed.quantize.quantizer import QuantizeOptions

    model = random_model(2, inputs=300, units=[300], timesteps=2)
    x = random_inputs(2, 4, 2, 300)
    for bits in (8, 16):
        out = tmp_path / f"int{bits}"
        options = QuantizeOptions(weight_bits=(bits,))
        conversion = convert_ir(model, x, out, options=options)
        assert conversion.qmodel.layers[0].weight_bits == bits
        x_q = fp.quantize_input(x, conversion.qmodel.input_inv_scale)
        assert_bit_exact(reference.run(conversion.qmodel, x_q), run_host(out, x_q))


def test_diverging_float_model_is_refused_naming_the_layer(tmp_path):
    """The fuzzer's model (CI, seed 10928): stacked ReLU SimpleRNNs over huge weights, whose
    float outputs pass float32's maximum within 94 timesteps; Keras' predict is inf there,
    so convert refuses, naming the first layer that overflows, and writes nothing."""
    from lstm_embed.kinds.base import Diverges
    from lstm_embed.tools import fuzz

    rnn = dict(recurrent_activation="sigmoid", bias="tiny", kind="simple_rnn", stateful=True)
    spec = fuzz.ModelSpec(
        seed=10928, inputs=9, timesteps=94, dense=(), return_sequences=False,
        fixed_length=False, calibration_scale=715.6713196313018, weight_bits=(8,),
        lstm=(
            fuzz.LSTMSpec(units=9, weights="huge", activation="relu", **rnn),
            fuzz.LSTMSpec(units=11, weights="huge", activation="linear", go_backwards=True,
                          bidirectional="mul", **rnn),
            fuzz.LSTMSpec(units=63, weights="equal", activation="relu", go_backwards=True,
                          bidirectional="mul", **{**rnn, "bias": None}),
        ),
    )  # fmt: skip
    case = fuzz.build_case(spec)
    with np.errstate(all="ignore"):
        peak = np.max(np.abs(reference_float_outputs(case)))
    assert not peak <= np.finfo(np.float32).max  # the oracle: the float model does overflow
    with pytest.raises(Diverges, match=r"layer '[a-z_0-9]+'.*beyond float32"):
        convert_ir(case.model, case.calibration, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def reference_float_outputs(case) -> np.ndarray:
    from lstm_embed.ir.float_model import forward

    outputs, _ = forward(case.model, case.calibration.astype(np.float64))
    return outputs


def test_dense_too_long_for_one_int32_sum_converts_with_int8(tmp_path: Path) -> None:
    """A Dense of 600 inputs (say, behind a Flatten): 127 * 32767 * 600 > 2^31, so its int8
    rows are summed in blocks; int8 and int16 weights both convert."""
    rng = np.random.default_rng(0)
    lstm = random_lstm(rng, "lstm", 2, 4)
    spread = DenseLayer("spread", 4, 600, rng.normal(size=(4, 600)), np.zeros(600), "tanh")
    dense = DenseLayer("wide", 600, 3, rng.normal(size=(600, 3)) * 0.05, np.zeros(3), "linear")
    ir = Model("net", 2, 5, (lstm, spread, dense))
    x = rng.normal(size=(8, 5, 2))
    int8 = convert_ir(ir, x, tmp_path / "a", name="net").qmodel
    assert int8.layers[-1].weight_bits == 8 and int8.layers[-1].blocked
    options = QuantizeOptions(weight_bits=(16,))
    assert convert_ir(ir, x, tmp_path / "b", name="net", options=options).qmodel is not None


def test_table_size_follows_the_weights_unless_given(tmp_path: Path) -> None:
    """The tanh table's default: 128 intervals per sign (257 entries stored) when every layer
    has int8 weights, 256 (513) when any layer has int16 weights (docs/numerics.md measures
    why); --table-log2-entries overrides it."""
    rng = np.random.default_rng(1)
    first = random_lstm(rng, "a", 2, 3, return_sequences=True)
    ir = Model("net", 2, 4, (first, random_lstm(rng, "b", 3, 2)))
    x = rng.normal(size=(8, 4, 2))
    cases = [((8,), None, 257), ((16,), None, 513), ((16, 8), None, 513), ((16,), 6, 129)]
    for k, (bits, log2, stored) in enumerate(cases):
        options = QuantizeOptions(weight_bits=bits, table_log2_entries=log2)
        qmodel = convert_ir(ir, x, tmp_path / str(k), name="net", options=options).qmodel
        assert len(qmodel.tables["tanh"].signed_entries) == stored, (bits, log2)
        text = (tmp_path / str(k) / "net_weights.h").read_text()
        assert re.search(rf"int16_t net_tanh_table\[{stored}\]", text), (bits, log2)
