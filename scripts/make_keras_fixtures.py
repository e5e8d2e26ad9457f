"""Small Keras model files in every format, for the framework-free reader's tests.

Two writers, each in its own subprocess so the two Keras lines never share a process:
  k3: Keras 3 (KERAS_BACKEND=tensorflow, ``import keras``) -> .keras and .h5
  k2: tf_keras (Keras 2)                                   -> .h5 and .keras
Next to the model files ``<model>.<writer>.keras|h5`` (same model, same weights) is one
``<model>.<writer>.npz`` (their common stem): every layer's get_weights() as ``w/<layer>/<i>``,
a fixed input ``x`` and ``y = model.predict(x)``. ``manifest.json`` lists the versions and, per
file, the format, class chain, count_params() and output shape of every layer (InputLayer left
out, nested models flattened). Weights are random and non-zero (biases too), so order mistakes
show; no training.

    .venv/bin/python scripts/make_keras_fixtures.py [--only NAME[,NAME...]] [out_dir]

Writing is deterministic (seeded weights and inputs: the .h5, .npz and manifest.json come out
byte for byte the same) except inside a .keras zip, which holds the time it was saved and, in
its config.json, Python object ids as "shared_object_id"; so regenerating everything rewrites
every .keras file. ``--only`` writes just the named models' files and merges their entries into
the existing manifest.json; it refuses when the installed versions differ from the manifest's
(the manifest records one set: then regenerate everything).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "keras"
WRITERS = ("k3", "k2")
BATCH = 3  # sequences in x


def _models(keras: Any, writer: str) -> dict[str, Callable[[], Any]]:
    """Model builders by fixture name."""
    L = keras.layers

    def seq(name: str, shape: tuple, *layers: Any, batch_size: int | None = None) -> Any:
        inp = keras.Input(shape=shape, batch_size=batch_size)
        return keras.Sequential([inp, *layers], name=name)

    def nested() -> Any:
        inp = keras.Input(shape=(5, 2))
        inner = keras.Sequential([L.LSTM(3), L.Dense(2)])
        out = L.Dense(1, activation="tanh")(inner(inp))
        return keras.Model(inp, out, name="nested")

    def functional_chain() -> Any:
        inp = keras.Input(shape=(5, 2))
        out = L.Dense(2)(L.LSTM(3)(inp))
        return keras.Model(inp, out, name="functional_chain")

    def nested_functional() -> Any:
        # the transfer-learning shape: a Functional base inside a Sequential
        base_in = keras.Input(shape=(5, 2))
        base = keras.Model(base_in, L.Dense(2)(L.LSTM(3)(base_in)), name="base")
        return keras.Sequential([keras.Input((5, 2)), base, L.Dense(1)], name="nested_functional")

    models: dict[str, Callable[[], Any]] = {
        "lstm_tiny": lambda: seq("lstm_tiny", (1, 1), L.LSTM(1)),
        "lstm_dense": lambda: seq(
            "lstm_dense", (4, 2), L.LSTM(3), L.Dense(2, activation="softmax")
        ),
        "stacked": lambda: seq(
            "stacked",
            (6, 2),
            L.LSTM(4, return_sequences=True),
            L.Dropout(0.2),
            L.LSTM(3, recurrent_activation="hard_sigmoid", use_bias=False),
            L.Dense(1),
        ),
        "seq_any_length": lambda: seq(
            "seq_any_length",
            (None, 3),
            L.LSTM(4, return_sequences=True),
            L.Dense(2, activation="relu"),
        ),
        "nested": nested,
        "functional_chain": functional_chain,
        "nested_functional": nested_functional,
        "conv_lstm": lambda: seq(
            "conv_lstm",
            (8, 2),
            L.Conv1D(4, 3, activation="relu"),
            L.MaxPooling1D(2),
            L.LSTM(3),
            L.Dense(2),
        ),
        "gru": lambda: seq("gru", (5, 2), L.GRU(3), L.Dense(1)),
        "gru_reset_before": lambda: seq(
            "gru_reset_before", (5, 2), L.GRU(3, reset_after=False), L.Dense(1)
        ),
        "bidirectional": lambda: seq(
            "bidirectional", (5, 2), L.Bidirectional(L.LSTM(3)), L.Dense(1)
        ),
        "simple_rnn": lambda: seq("simple_rnn", (5, 2), L.SimpleRNN(3), L.Dense(1)),
        "time_distributed": lambda: seq(
            "time_distributed",
            (5, 2),
            L.LSTM(3, return_sequences=True),
            L.TimeDistributed(L.Dense(2)),
        ),
        "batchnorm": lambda: seq(
            "batchnorm", (5, 2), L.LSTM(3), L.BatchNormalization(), L.Dense(1)
        ),
        "masking": lambda: seq("masking", (5, 2), L.Masking(0.0), L.LSTM(3), L.Dense(1)),
        "stateful": lambda: seq(
            "stateful", (4, 2), L.LSTM(3, stateful=True), L.Dense(1), batch_size=1
        ),
        "go_backwards": lambda: seq(
            "go_backwards", (5, 2), L.LSTM(3, go_backwards=True, return_sequences=True)
        ),
        # the layers around the recurrent core, each where it runs on its own (not folded)
        "layernorm_acts": lambda: seq(
            "layernorm_acts",
            (5, 2),
            L.LSTM(4, return_sequences=True),
            L.LayerNormalization(),
            L.LeakyReLU(),
            L.Activation("tanh"),
            L.Dense(4),
            L.ReLU(max_value=0.5),  # with an option: its own layer, not Dense's activation
            L.Dense(3),
            L.Softmax(),  # after a linear Dense: folds into it
        ),
        "causal_conv": lambda: seq(
            "causal_conv",
            (8, 2),
            L.Conv1D(3, 3, padding="causal", dilation_rate=2, activation="relu"),
            L.BatchNormalization(),  # no Dense neighbour: an affine of its own
            L.LSTM(3),
            L.Dense(2, activation="tanh"),
        ),
        "pool_heads": lambda: seq(
            "pool_heads",
            (8, 2),
            L.AveragePooling1D(3, strides=2, padding="same"),
            L.LSTM(4, return_sequences=True),
            L.GlobalAveragePooling1D(),
            L.Dense(2, activation="sigmoid"),
        ),
        "reshape_repeat": lambda: seq(
            "reshape_repeat",
            (4, 2),
            L.Reshape((2, 4)),
            L.LSTM(3),
            L.RepeatVector(3),
            L.SimpleRNN(2, activation="relu", return_sequences=True),
            L.Flatten(),
            L.Dense(2),
        ),
        "bidir_merge": lambda: seq(
            "bidir_merge",
            (5, 2),
            L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="ave"),
            L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum"),
            L.Bidirectional(
                L.SimpleRNN(2, activation="linear", return_sequences=True), merge_mode="mul"
            ),
            L.GlobalMaxPooling1D(),
        ),
    }
    if writer == "k2":
        # Keras 2 Sequential without an Input: the first layer carries the input shape
        models["no_input_layer"] = lambda: keras.Sequential(
            [L.LSTM(3, input_shape=(4, 2)), L.Dense(1)], name="no_input_layer"
        )
    return models


def _leaves(model: Any) -> list[Any]:
    """The chain of layers, InputLayer left out and nested models flattened."""
    out = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        out.extend(_leaves(layer) if hasattr(layer, "layers") else [layer])
    return out


def _randomize(layers: list[Any], rng: np.random.Generator) -> None:
    """Non-zero random weights everywhere (biases too), so order mistakes show."""
    for layer in layers:
        new = []
        for var, value in zip(layer.weights, layer.get_weights(), strict=True):
            w = rng.uniform(-0.6, 0.6, value.shape)
            if "moving_variance" in var.name or "moving_variance" in getattr(var, "path", ""):
                w = rng.uniform(0.5, 1.5, value.shape)  # a variance must be positive
            new.append(w.astype(np.float32))
        layer.set_weights(new)


def _input(model: Any, name: str, rng: np.random.Generator) -> np.ndarray:
    shape = list(model.inputs[0].shape[1:])
    if shape[0] is None:
        shape[0] = 7  # any length: pick one
    x = rng.normal(size=(BATCH, *shape)).astype(np.float32)
    if name == "masking":
        x[1, -2:, :] = 0.0  # masked trailing steps
        x[2, 1, :] = 0.0  # a masked step in the middle
    return x


def _shape(tensor_shape: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in tuple(tensor_shape)]


def _output_shapes(model: Any, leaves: list[Any]) -> list[list[int | None]]:
    """Each layer's output shape, chained with compute_output_shape from the model input."""
    shape = tuple(model.inputs[0].shape)
    shapes = []
    for layer in leaves:
        shape = tuple(layer.compute_output_shape(shape))
        shapes.append(_shape(shape))
    return shapes


def _save(model: Any, path: Path) -> None:
    if path.suffix == ".h5":
        model.save(path, include_optimizer=False)
    else:
        model.save(path)


def _reset_states(model: Any) -> None:
    for layer in _leaves(model):
        if getattr(layer, "stateful", False):
            (getattr(layer, "reset_state", None) or layer.reset_states)()


def _write_model(keras: Any, writer: str, name: str, build: Callable[[], Any], out: Path) -> dict:
    keras.backend.clear_session()  # layer names start again at "lstm", "dense"
    keras.utils.set_random_seed(1234)
    rng = np.random.default_rng(_seed(name))
    model = build()
    leaves = _leaves(model)
    _randomize(leaves, rng)
    x = _input(model, name, rng)
    stateful = any(getattr(layer, "stateful", False) for layer in leaves)
    y = model.predict(x, verbose=0, batch_size=1 if stateful else None)
    _reset_states(model)  # save the file with zero states
    arrays = {"x": x, "y": np.asarray(y, dtype=np.float32)}
    for layer in leaves:
        for i, w in enumerate(layer.get_weights()):
            arrays[f"w/{layer.name}/{i}"] = np.asarray(w)
    np.savez_compressed(out / f"{name}.{writer}.npz", **arrays)  # shared by both extensions
    entries = {}
    formats = {".keras": f"{_line(writer)} .keras", ".h5": f"{_line(writer)} .h5"}
    for ext, fmt in formats.items():
        path = out / f"{name}.{writer}{ext}"
        _save(model, path)
        entries[path.name] = {
            "format": fmt,
            "model": name,
            "npz": f"{name}.{writer}.npz",
            "input_shape": _shape(model.inputs[0].shape[1:]),
            "batch_size": model.inputs[0].shape[0],
            "chain": [type(layer).__name__ for layer in leaves],
            "layer_names": [layer.name for layer in leaves],
            "count_params": [int(layer.count_params()) for layer in leaves],
            "output_shapes": _output_shapes(model, leaves),
            # stateful: y came from predict(x, batch_size=1), the state carried row to row
            "predict_batch_size": 1 if stateful else None,
        }
    return entries


def _seed(name: str) -> int:
    return sum((i + 1) * ord(c) for i, c in enumerate(name))  # stable across runs


def _line(writer: str) -> str:
    return {"k3": "keras3", "k2": "keras2"}[writer]


def run_writer(writer: str, out: Path, only: list[str]) -> None:
    """In a fresh process: import one Keras line and write every model it can save (only the
    named ones when ``only`` is not empty)."""
    from lstm_embed.tools.quiet import ml_import

    if writer == "k3":
        os.environ["KERAS_BACKEND"] = "tensorflow"
        keras = ml_import("keras")
    else:
        keras = ml_import("tf_keras")
    import h5py
    import tensorflow as tf

    entries: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, build in _models(keras, writer).items():
        if only and name not in only:
            continue
        try:
            entries.update(_write_model(keras, writer, name, build, out))
        except Exception as exc:  # a writer that cannot save a model: record why
            skipped[f"{name}.{writer}"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    versions = {
        "tensorflow": tf.__version__,
        "keras" if writer == "k3" else "tf_keras": keras.__version__,
        "h5py": h5py.__version__,
    }
    part = {"files": entries, "skipped": skipped, "versions": versions}
    (out / f"_part_{writer}.json").write_text(json.dumps(part))


def _arguments(argv: list[str]) -> tuple[Path, list[str]]:
    only: list[str] = []
    if argv[:1] == ["--only"]:
        if len(argv) < 2:
            sys.exit("--only needs a comma-separated list of model names")
        only, argv = argv[1].split(","), argv[2:]
    return (Path(argv[0]) if argv else OUT), only


def main() -> None:
    out, only = _arguments(sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    old: dict[str, Any] = {"versions": {}, "files": {}, "skipped": {}}
    if only:
        old = json.loads((out / "manifest.json").read_text())
        known = {entry["model"] for entry in old["files"].values()}
        known |= {key.rsplit(".", 1)[0] for key in old["skipped"]}
        print(f"--only {','.join(only)}: new {sorted(set(only) - known) or 'none'}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    env.pop("TF_USE_LEGACY_KERAS", None)
    versions = {"python": sys.version.split()[0], "numpy": np.__version__}
    files = {k: v for k, v in old["files"].items() if v["model"] not in only}
    skipped = {k: v for k, v in old["skipped"].items() if k.rsplit(".", 1)[0] not in only}
    with tempfile.TemporaryDirectory() as staging:  # out changes only once every writer is done
        stage = Path(staging)
        for writer in WRITERS:
            cmd = [sys.executable, __file__, "--writer", writer, str(stage), ",".join(only)]
            subprocess.run(cmd, check=True, env=env)
            part_path = stage / f"_part_{writer}.json"
            part = json.loads(part_path.read_text())
            part_path.unlink()
            versions.update(part["versions"])
            files.update(part["files"])
            skipped.update(part["skipped"])
        written = {entry["model"] for entry in files.values()}
        written |= {key.rsplit(".", 1)[0] for key in skipped}
        if set(only) - written:
            sys.exit(f"--only: no model named {sorted(set(only) - written)}")
        if only and versions != old["versions"]:
            sys.exit(
                f"versions {versions} differ from manifest.json's {old['versions']}: the"
                " manifest records one set; regenerate every fixture (without --only)"
            )
        if only:
            doomed = [p for p in out.iterdir() if p.name.split(".")[0] in only]
        else:
            doomed = [*out.glob("*.keras"), *out.glob("*.h5"), *out.glob("*.npz")]
        for path in doomed:
            path.unlink()
        for path in stage.iterdir():
            shutil.move(path, out / path.name)
    manifest = {"versions": versions, "files": dict(sorted(files.items())), "skipped": skipped}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"{len(files)} model files, {total / 1e6:.2f} MB in {out}; skipped: {skipped or 'none'}")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--writer":
        names = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else []
        run_writer(sys.argv[2], Path(sys.argv[3]), names)
    else:
        main()
