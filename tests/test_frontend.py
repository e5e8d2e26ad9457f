"""Model files -> IR -> C without an ML framework: every file kind, hostile files, inspect.

The fixtures (tests/fixtures/keras/, made by scripts/make_keras_fixtures.py with the versions in
its manifest.json) hold files written by Keras 3 and by tf_keras, each with the writer's own
``model.predict`` output on a fixed input: the oracle the converted C is held to here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.frontends.keras.frontend import FrontendError, load_model
from lstm_embed.pipeline import convert
from lstm_embed.targets.hostbuild import run_host

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
ROOT = Path(__file__).parent.parent
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())

# Models whose every layer lstm-embed supports; each exists in all four file kinds.
SUPPORTED = (
    "lstm_tiny",
    "lstm_dense",
    "stacked",
    "seq_any_length",
    "nested",
    "nested_functional",
    "functional_chain",
    "time_distributed",
    "batchnorm",
    "gru",  # reset_after=True: bias (2, 3n)
    "gru_reset_before",  # reset_after=False: bias (3n,)
    "simple_rnn",
    "go_backwards",
    "stateful",  # its oracle is Keras' predict(x, batch_size=1): the rows are one stream
    "bidirectional",
    "conv_lstm",  # Conv1D (valid) + MaxPooling1D: run-only
    "masking",
    # the layers around the recurrent core, each running on its own:
    "layernorm_acts",  # LayerNormalization, LeakyReLU, Activation(tanh), ReLU(max_value),
    # Softmax after a linear Dense (folded)
    "causal_conv",  # causal dilated Conv1D (streaming), BatchNormalization (an affine: no
    # Dense neighbour), Dense(tanh)
    "pool_heads",  # AveragePooling1D (strides, same), GlobalAveragePooling1D, Dense(sigmoid)
    "reshape_repeat",  # Reshape, RepeatVector, SimpleRNN(relu), Flatten
    "bidir_merge",  # Bidirectional LSTM ave, GRU sum, SimpleRNN(linear) mul; GlobalMaxPooling1D
)
# BatchNormalization is folded into its Dense neighbour: the IR holds fewer parameters
FOLDED = ("batchnorm",)
FILE_KINDS = ("k3.keras", "k3.h5", "k2.h5", "k2.keras")

# int8 C vs the writer's model.predict on these random-weight fixtures: weight rounding to 8 bits
# (1/254 of each row's largest weight) through a few layers stays within 2% of the output range
# plus 1e-3 absolute (outputs of a 1-unit model span little); the same bound as the random-weight
# models of test_gru.py and test_recurrent_family.py. Measured (TF 2.21): at most 0.7% of the
# range, but for stacked and nested, whose outputs span 0.018 and 0.006: 2.8e-4 and 1.6e-4.
FIXTURE_RANGE_FRACTION = 0.02
FIXTURE_ABS = 1e-3
FLOAT_FORWARD_TOLERANCE = 1e-5  # float64 IR forward vs float32 predict


def fixture(model: str, kind: str) -> Path:
    return FIXTURES / f"{model}.{kind}"


def oracle(model: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    writer = kind.split(".")[0]
    with np.load(FIXTURES / f"{model}.{writer}.npz") as data:
        return data["x"], data["y"]


# The one difference Keras 2 and 3 files may keep: Keras 2's hard_sigmoid is another function
# (clip(0.2x + 0.5) instead of relu6(x + 3) / 6), so its IR names it apart.
KERAS2_NAMES = {"hard_sigmoid_keras2": "hard_sigmoid"}


def layer_fields(layer) -> dict:
    values = {f.name: getattr(layer, f.name) for f in fields(layer)}
    return {k: KERAS2_NAMES.get(v, v) if isinstance(v, str) else v for k, v in values.items()}


def assert_same_ir(a, b) -> None:
    assert (a.input_size, a.timesteps, len(a.layers)) == (b.input_size, b.timesteps, len(b.layers))
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert_same_layer(la, lb)


def assert_same_layer(la, lb) -> None:
    """Field by field, into the layers a layer holds (Bidirectional, go_backwards/stateful)."""
    assert type(la) is type(lb)
    fa, fb = layer_fields(la), layer_fields(lb)
    for key in fa:
        if key == "name":
            continue  # Keras 2 and 3 number auto-named layers differently
        if isinstance(fa[key], np.ndarray):
            np.testing.assert_array_equal(fa[key], fb[key], err_msg=f"{la.name}.{key}")
        elif is_dataclass(fa[key]):
            assert_same_layer(fa[key], fb[key])
        else:
            assert fa[key] == fb[key], (la.name, key)


@pytest.mark.parametrize("model", SUPPORTED)
def test_every_file_kind_gives_the_same_ir(model):
    irs = {kind: load_model(fixture(model, kind)) for kind in FILE_KINDS}
    for kind in FILE_KINDS[1:]:
        assert_same_ir(irs[FILE_KINDS[0]], irs[kind])


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize("model", SUPPORTED)
def test_float_ir_equals_predict(model, kind):
    """The IR read without Keras reproduces the writer's predict: weights, gate order, nesting."""
    from lstm_embed.ir.float_model import forward

    x, y = oracle(model, kind)
    ir = load_model(fixture(model, kind))
    np.testing.assert_allclose(forward(ir, x)[0], y, atol=FLOAT_FORWARD_TOLERANCE)
    if model not in FOLDED:
        assert ir.params == sum(MANIFEST["files"][fixture(model, kind).name]["count_params"])


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize("model", SUPPORTED)
def test_converted_c_is_close_to_predict(tmp_path, model, kind):
    x, y = oracle(model, kind)
    out = tmp_path / "out"
    convert(fixture(model, kind), x, out)
    c_y = run_host(out, x)
    error = float(np.max(np.abs(c_y - y)))
    limit = FIXTURE_RANGE_FRACTION * float(np.ptp(y)) + FIXTURE_ABS
    assert error <= limit, f"{model}.{kind}: max abs error {error:.3g} > {limit:.3g}"


def test_commands_import_no_ml_framework(tmp_path):
    """Run in a fresh interpreter: after inspect, convert, run, trace, build and flash --dry-run,
    no keras, tensorflow, jax or torch module is loaded."""
    from lstm_embed.targets import firmware

    build = firmware.toolchain_available(need_qemu=False)
    if not build and os.environ.get("LSTM_EMBED_REQUIRE_FIRMWARE"):
        pytest.fail("LSTM_EMBED_REQUIRE_FIRMWARE is set but arm-none-eabi-gcc is missing")
    x_path = tmp_path / "x.npy"
    np.save(x_path, oracle("lstm_dense", "k3.keras")[0])
    out = str(tmp_path / "out")
    commands = [
        ["inspect", str(fixture("lstm_dense", "k2.h5"))],
        ["convert", str(fixture("lstm_dense", "k3.keras")), "-c", str(x_path), "-o", out],
        ["run", out, "-i", str(x_path), "-o", str(tmp_path / "y.npy")],
        ["trace", out, "-i", str(x_path), "-o", str(tmp_path / "t.npz")],
        *([["build", out, "--board", "qemu-m4"]] if build else []),
        ["flash", out, "--board", "nucleo-l476rg", "--dry-run"],
    ]
    script = f"""
import sys
from lstm_embed import cli
for argv in {commands!r}:
    assert cli.main(argv) == 0, argv
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow", "jax",
                "torch", "tf_keras"))
print("LOADED", loaded)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stdout, result.stdout
    assert "pyocd" in result.stdout  # flash --dry-run printed its command
    if not build:
        pytest.skip("build not run: arm-none-eabi-gcc not installed (the rest passed)")
    assert "built " in result.stdout


def _compare(tmp_path: Path, kind: str, block_keras: bool) -> str:
    """`lstm-embed compare` in a fresh interpreter, optionally with Keras made unimportable."""
    x, _ = oracle("lstm_dense", kind)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    convert(fixture("lstm_dense", kind), x, out, force=True)
    block = "sys.modules['keras'] = sys.modules['tf_keras'] = None;" if block_keras else ""
    script = f"import sys; {block} from lstm_embed import cli; sys.exit(cli.main(sys.argv[1:]))"
    argv = ["compare", str(fixture("lstm_dense", kind)), str(out), "-i", str(tmp_path / "x.npy")]
    result = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "kind, oracle_name", [("k3.keras", "Keras 3."), ("k2.h5", "tf_keras 2.")], ids=["k3", "k2"]
)
def test_compare_uses_the_keras_that_reads_the_file(tmp_path, kind, oracle_name):
    assert oracle_name in _compare(tmp_path, kind, block_keras=False).splitlines()[0]


def test_compare_without_keras_uses_the_float_model_and_says_so(tmp_path):
    text = _compare(tmp_path, "k3.keras", block_keras=True)
    assert "lstm-embed float model" in text.splitlines()[0]
    error = float(next(line for line in text.splitlines() if "max_abs_error " in line).split()[-1])
    x, y = oracle("lstm_dense", "k3.keras")
    c_y = run_host(tmp_path / "out", x)
    # the float model stands in for Keras: the reported error is the C's error against predict
    # up to the float model's own distance from it
    assert abs(error - float(np.max(np.abs(c_y - y)))) <= FLOAT_FORWARD_TOLERANCE


def test_compare_report_without_matplotlib_says_what_to_install(tmp_path):
    """matplotlib is an extra (lstm-embed[report]): without it, compare --report is a user
    error (exit 2, one line, no report folder), not an internal one."""
    x, _ = oracle("lstm_dense", "k3.keras")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    convert(fixture("lstm_dense", "k3.keras"), x, out)
    block = "sys.modules['matplotlib'] = sys.modules['keras'] = sys.modules['tf_keras'] = None"
    script = f"import sys; {block}; from lstm_embed import cli; sys.exit(cli.main(sys.argv[1:]))"
    argv = ["compare", str(fixture("lstm_dense", "k3.keras")), str(out)]
    argv += ["-i", str(tmp_path / "x.npy"), "--report", str(tmp_path / "report")]
    result = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "matplotlib" in lines[0] and "pip install 'lstm-embed[report]'" in lines[0]
    assert "internal error" not in lines[0]
    assert not (tmp_path / "report").exists()  # refused before any work: no folder left


def _flash_column(text: str) -> tuple[dict[str, int], int]:
    """inspect's output: the flash bytes per layer (by the table's header) and the total."""
    lines = text.splitlines()
    header = lines[1]
    start, end = header.index("flash bytes"), header.index("not supported")
    table = lines[3 : lines.index(next(line for line in lines if line.startswith("total")))]
    column = {line.split()[0]: int(line[start:end]) for line in table}
    total = int(text.split("flash after quantization: ")[1].split()[0])
    return column, total


def test_inspect_flash_follows_the_weight_width(capsys):
    """Flash bytes per layer: each weight 1 byte (int8) or 2 (int16), and per output row its
    int32 bias, int32 multiplier and int8 shift (fixedpoint.BIAS_ROW_BYTES); weights and rows
    counted from the fixture's own arrays (get_weights(): kernels 2-D, biases 1-D)."""
    from lstm_embed.quantize.fixedpoint import BIAS_ROW_BYTES

    path = fixture("lstm_dense", "k3.keras")  # LSTM(3) on 2 features, Dense(2)
    entry = MANIFEST["files"][path.name]
    with np.load(FIXTURES / entry["npz"]) as data:
        counts = {}  # layer: (weights, rows)
        for layer in entry["layer_names"]:
            arrays = [data[k] for k in data.files if k.startswith(f"w/{layer}/")]
            counts[layer] = (
                sum(a.size for a in arrays if a.ndim == 2),
                sum(a.size for a in arrays if a.ndim == 1),
            )
    assert counts == {"lstm": (4 * 3 * (2 + 3), 4 * 3), "dense": (3 * 2, 2)}
    flash = {}
    for weights in ("int8", "int16", "int16,int8"):
        assert cli.main(["inspect", str(path), "--weights", weights]) == 0
        flash[weights] = _flash_column(capsys.readouterr().out)
    for weights, widths in (("int8", (1, 1)), ("int16", (2, 2)), ("int16,int8", (2, 1))):
        expected = {
            layer: n_weights * width + rows * BIAS_ROW_BYTES
            for (layer, (n_weights, rows)), width in zip(counts.items(), widths, strict=True)
        }
        assert flash[weights] == (expected, sum(expected.values())), weights
    # int16 costs one more byte per weight, nothing more
    assert flash["int16"][1] - flash["int8"][1] == sum(w for w, _ in counts.values())


# ---------------------------------------------------------------------------------------------
# Hostile files: one clear line, exit 2, no traceback, no output folder, bounded memory and time


def _zip_with(path: Path, source: Path, edit) -> Path:
    """A copy of a .keras file with its members changed by ``edit(name, data) -> data|None``."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = edit(info.filename, src.read(info.filename))
            if data is not None:
                dst.writestr(info.filename, data)
    return path


def _edit_config(change):
    def edit(name: str, data: bytes) -> bytes:
        if name != "config.json":
            return data
        config = json.loads(data)
        change(config)
        return json.dumps(config).encode()

    return edit


def _layers(config: dict) -> list:
    return config["config"]["layers"]


def _set_units(config: dict) -> None:
    next(la for la in _layers(config) if la["class_name"] == "LSTM")["config"]["units"] = 10**9


def _rename_class(name: str):
    def change(config: dict) -> None:
        layer = next(la for la in _layers(config) if la["class_name"] == "Dense")
        layer["class_name"] = name
        if name == "Lambda":
            layer["config"]["function"] = {"class_name": "__lambda__", "config": {"code": "AAAA"}}
        else:
            layer["module"] = "my_project.layers"
            layer["registered_name"] = f"my_project>{name}"

    return change


def _wrong_shape(name: str, data: bytes) -> bytes:
    return data


def _hostile(tmp_path: Path, case: str) -> Path:
    good = fixture("lstm_dense", "k3.keras")
    if case == "truncated zip":
        path = tmp_path / "truncated.keras"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "random bytes":
        path = tmp_path / "random.h5"
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "no config.json":
        path = _zip_with(tmp_path / "m.keras", good, lambda n, d: None if n == "config.json" else d)
    elif case == "no weights":
        path = _zip_with(tmp_path / "m.keras", good, lambda n, d: None if n.endswith(".h5") else d)
    elif case == "shapes disagree":
        other = fixture("stacked", "k3.keras")
        with zipfile.ZipFile(other) as z:
            weights = z.read("model.weights.h5")
        path = _zip_with(
            tmp_path / "m.keras", good, lambda n, d: weights if n.endswith(".h5") else d
        )
    elif case == "10^9 units":
        path = _zip_with(tmp_path / "m.keras", good, _edit_config(_set_units))
    elif case == "unknown class":
        path = _zip_with(tmp_path / "m.keras", good, _edit_config(_rename_class("FancyDense")))
    elif case == "Lambda layer":
        path = _zip_with(tmp_path / "m.keras", good, _edit_config(_rename_class("Lambda")))
    else:  # SavedModel folder
        path = tmp_path / "saved_model_dir"
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"\x08\x01")
    return path


UNSUPPORTED_HINT = "rebuild the model from the supported layers, or file an issue"
HOSTILE = {  # case: what the one line says
    "truncated zip": ("is not a zip archive (truncated or corrupt?)",),
    "random bytes": ("is not an HDF5 file (truncated or corrupt?)",),
    "no config.json": ("the .keras archive has no config.json",),
    "no weights": ("the .keras archive has no model.weights.h5",),
    "shapes disagree": ("layer 'lstm' (LSTM): kernel shape",),
    "10^9 units": ("!= (2, 4000000000)",),
    "unknown class": ("'my_project>FancyDense'", UNSUPPORTED_HINT),
    "Lambda layer": ("Lambda layers hold Python code",),
    "SavedModel folder": ('model.save("model.keras")',),
}


@pytest.mark.parametrize("command", ["inspect", "convert"])
@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_file_one_line_exit_2(tmp_path, case, command):
    path = _hostile(tmp_path, case)
    x_path = tmp_path / "x.npy"
    np.save(x_path, oracle("lstm_dense", "k3.keras")[0])
    out = tmp_path / "out"
    argv = ["inspect", str(path)]
    if command == "convert":
        argv = ["convert", str(path), "-c", str(x_path), "-o", str(out)]
    # a fresh interpreter under a 1 GB address-space limit and a 10 s budget
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30));"
        "from lstm_embed import cli; sys.exit(cli.main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, cwd=ROOT, timeout=10
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    # inspect prints its table (every layer it could read) on stdout; stderr is one line
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"lstm-embed {command}: error: {path}: "), lines[0]
    for fragment in HOSTILE[case]:
        assert fragment in lines[0], lines[0]
    assert "safe_mode" not in lines[0]
    assert not out.exists()


def test_inspect_lists_every_unsupported_layer(tmp_path, capsys):
    """An EinsumDense + ELU front-end: the whole table, both layers marked, exit 2."""
    import keras

    layers = keras.layers
    chain = [layers.EinsumDense("btf,fk->btk", (12, 3)), layers.ELU(), layers.LSTM(4),
             layers.Dense(2)]  # fmt: skip
    model = keras.Sequential([keras.Input((12, 3)), *chain])
    model.save(tmp_path / "m.keras")
    assert cli.main(["inspect", str(tmp_path / "m.keras")]) == 2
    captured = capsys.readouterr()
    table = captured.out
    einsum = next(line for line in table.splitlines() if line.startswith("einsum_dense"))
    elu = next(line for line in table.splitlines() if line.startswith("elu"))
    assert "not supported" in einsum and "EinsumDense" in einsum
    assert "ELU" in elu
    assert "LSTM" in table and "Dense" in table
    assert "einsum_dense" in captured.err and "elu" in captured.err
    assert UNSUPPORTED_HINT in captured.err
    for layer in model.layers:
        assert str(layer.count_params()) in table


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_inspect_params_equal_count_params_for_every_file(name):
    """Every fixture, supported or not: one row per layer with Keras' count_params()."""
    from lstm_embed.frontends.keras.frontend import inspect_rows, read_spec

    rows = inspect_rows(read_spec(FIXTURES / name))
    entry = MANIFEST["files"][name]
    assert [r["type"] for r in rows] == entry["chain"]
    assert [r["params"] for r in rows] == entry["count_params"]
    for row, shape in zip(rows, entry["output_shapes"], strict=True):
        if not row["unsupported"] and row["output_shape"] != "?":
            assert list(row["output_shape"]) == shape, (name, row["name"])


def test_softmax_layer_without_a_linear_dense_before_it_is_refused(tmp_path):
    """(A BatchNormalization without a Dense neighbour is an integer affine now:
    tests/test_around_core.py.)"""
    import keras

    layers = keras.layers
    chain = [layers.LSTM(3, return_sequences=True), layers.Softmax(), layers.LSTM(2)]
    model = keras.Sequential([keras.Input((4, 2)), *chain])
    path = tmp_path / "m.keras"
    model.save(path)
    with pytest.raises(FrontendError, match=r"softmax.*after a Dense layer with a linear"):
        load_model(path)


def test_functional_branch_is_refused_naming_the_layer(tmp_path):
    """A Functional model that is not a single chain gets an error naming the layer."""
    good = fixture("functional_chain", "k3.keras")

    def branch(config: dict) -> None:
        layers = _layers(config)
        dense = next(la for la in layers if la["class_name"] == "Dense")
        extra = json.loads(json.dumps(dense))
        extra["name"] = extra["config"]["name"] = "side_dense"
        layers.append(extra)
        config["config"]["output_layers"] = [[dense["name"], 0, 0], ["side_dense", 0, 0]]

    path = _zip_with(tmp_path / "m.keras", good, _edit_config(branch))
    with pytest.raises(FrontendError, match=r"output|side_dense|chain"):
        load_model(path)
