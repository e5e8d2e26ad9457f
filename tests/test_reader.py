"""The framework-free reader against the committed Keras fixtures, and against hostile files.

No Keras or TensorFlow here: the fixtures (scripts/make_keras_fixtures.py) carry what Keras said
(get_weights(), count_params(), the class chain) in their .npz files and manifest.json. Hostile
files are made in tmp_path from the good fixtures.
"""

from __future__ import annotations

import ast
import json
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from lstm_embed.frontends.keras.reader import (
    MAX_MEMBER_BYTES,
    MAX_WEIGHT_ELEMENTS,
    ModelSpec,
    ReaderError,
    read_model,
)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "keras"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
FILES = MANIFEST["files"]
BY_MODEL: dict[str, list[str]] = defaultdict(list)
for _name, _entry in sorted(FILES.items()):
    BY_MODEL[_entry["model"]].append(_name)

# config keys whose meaning the layer kinds rely on: equal in every format of one model
KEY_OPTIONS = [
    "name",
    "units",
    "activation",
    "recurrent_activation",
    "use_bias",
    "return_sequences",
    "return_state",
    "go_backwards",
    "stateful",
    "unroll",
    "reset_after",
    "unit_forget_bias",
    "dropout",
    "recurrent_dropout",
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "pool_size",
    "mask_value",
    "rate",
    "epsilon",
    "center",
    "scale",
    "merge_mode",
    "momentum",
    "negative_slope",
    "max_value",
    "threshold",
    "dilation_rate",
    "target_shape",
    "n",
    "keepdims",
]


def fixture(name: str) -> Path:
    return FIXTURES / name


def npz(name: str) -> Any:
    return np.load(FIXTURES / FILES[name]["npz"])


def expect_error(path: Path | str, *fragments: str) -> str:
    """read_model raises a one-line ReaderError that starts with the path and says what."""
    with pytest.raises(ReaderError) as info:
        read_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- the fixtures as Keras wrote them -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FILES))
def test_fixture_reads_as_keras_wrote_it(name: str) -> None:
    entry = FILES[name]
    spec = read_model(fixture(name))
    assert spec.file_format == entry["format"]
    assert spec.source == str(fixture(name))
    assert spec.name == entry["model"]
    assert [layer.class_name for layer in spec.layers] == entry["chain"]
    assert [layer.name for layer in spec.layers] == entry["layer_names"]
    assert spec.input_shape == tuple(entry["input_shape"])
    assert spec.batch_size == entry["batch_size"]
    assert [layer.param_count for layer in spec.layers] == entry["count_params"]
    line = "keras" if entry["format"].startswith("keras3") else "tf_keras"
    assert spec.keras_version == MANIFEST["versions"][line]
    weights = npz(name)
    for layer in spec.layers:
        expected = sorted(
            (k for k in weights.files if k.startswith(f"w/{layer.name}/")),
            key=lambda k: int(k.rsplit("/", 1)[1]),
        )
        assert len(layer.weights) == len(expected), layer.name
        for got, key in zip(layer.weights, expected, strict=True):
            assert got.dtype == np.float32
            assert got.shape == weights[key].shape, key
            assert np.array_equal(got, weights[key]), key


@pytest.mark.parametrize("model", sorted(BY_MODEL))
def test_every_format_of_a_model_gives_the_same_layers(model: str) -> None:
    specs = {name: read_model(fixture(name)) for name in BY_MODEL[model]}
    first_name, first = next(iter(specs.items()))
    for name, spec in specs.items():
        assert spec.input_shape == first.input_shape, name
        assert spec.batch_size == first.batch_size, name
        assert len(spec.layers) == len(first.layers), name
        for layer, ref in zip(spec.layers, first.layers, strict=True):
            assert (layer.class_name, layer.module, layer.registered_name) == (
                ref.class_name,
                ref.module,
                ref.registered_name,
            ), name
            _same_options(layer.config, ref.config, f"{name} vs {first_name}: {layer.name}")
            if "layer" in ref.config:  # wrappers: the inner layer's options too, but its name
                inner, inner_ref = layer.config["layer"]["config"], ref.config["layer"]["config"]
                _same_options(inner, inner_ref, f"{name}: {layer.name} inner", skip=("name",))
            assert len(layer.weights) == len(ref.weights)
            for got, want in zip(layer.weights, ref.weights, strict=True):
                assert np.array_equal(got, want), f"{name}: {layer.name}"


# Keras 2's hard_sigmoid is another function (0.2x + 0.5); normalize names it apart on purpose
SAME_FUNCTION = {"hard_sigmoid_keras2": "hard_sigmoid"}


def _same_options(config: dict, ref: dict, where: str, skip: tuple[str, ...] = ()) -> None:
    for key in KEY_OPTIONS:
        if key in skip or (key not in config and key not in ref):
            continue
        got, want = config.get(key, "<missing>"), ref.get(key, "<missing>")
        if isinstance(got, str) and isinstance(want, str):
            got, want = SAME_FUNCTION.get(got, got), SAME_FUNCTION.get(want, want)
        assert got == want, f"{where}: {key}"


def test_all_four_formats_exist_for_the_shared_models() -> None:
    for model, names in BY_MODEL.items():
        expected = 2 if model == "no_input_layer" else 4  # Keras 2 writer only
        assert len(names) == expected, (model, names)
    assert not MANIFEST["skipped"]


def test_fixtures_stay_small() -> None:
    """22 models of at most 267 parameters in 4 kinds: the bytes are HDF5 and zip overhead
    (about 5 kB per layer and file), so the models stay few and their layers short."""
    total = sum(p.stat().st_size for p in FIXTURES.iterdir())
    assert total < 2_500_000


# --- normalization --------------------------------------------------------------------------


def _all_configs(spec: ModelSpec) -> list[dict]:
    out = []
    for layer in spec.layers:
        out.append(layer.config)
        for key in ("layer", "backward_layer"):
            if isinstance(layer.config.get(key), dict):
                out.append(layer.config[key]["config"])
    return out


@pytest.mark.parametrize("name", sorted(FILES))
def test_configs_are_normalized(name: str) -> None:
    for config in _all_configs(read_model(fixture(name))):
        assert "dtype" not in config
        assert "implementation" not in config
        assert "time_major" not in config  # all fixtures are batch-major: False is dropped
        assert "batch_input_shape" not in config
        for key in ("activation", "recurrent_activation"):
            if key in config:
                assert isinstance(config[key], str), (key, config[key])


def test_wrappers_hold_their_inner_layers_normalized() -> None:
    k3 = read_model(fixture("bidirectional.k3.keras")).layers[0].config
    assert k3["layer"]["class_name"] == "LSTM" and k3["layer"]["config"]["units"] == 3
    assert k3["backward_layer"]["config"]["go_backwards"] is True  # Keras 3 writes both
    k2 = read_model(fixture("bidirectional.k2.h5")).layers[0].config
    assert "backward_layer" not in k2  # Keras 2 writes only the forward layer
    assert k2["layer"]["module"] == "keras.layers" and k2["layer"]["registered_name"] is None
    td = read_model(fixture("time_distributed.k2.keras")).layers[1].config
    assert td["layer"]["class_name"] == "Dense" and "dtype" not in td["layer"]["config"]


@pytest.mark.parametrize("name", BY_MODEL["stacked"])
def test_hard_sigmoid_is_named_per_version(name: str) -> None:
    """Keras 2's hard_sigmoid is clip(0.2x + 0.5); Keras 3's relu6(x + 3) / 6: not the same."""
    want = "hard_sigmoid_keras2" if ".k2." in name else "hard_sigmoid"
    assert read_model(fixture(name)).layers[2].config["recurrent_activation"] == want


@pytest.mark.parametrize("name", BY_MODEL["layernorm_acts"])
def test_keras2_float32_options_read_as_written(name: str) -> None:
    """tf_keras writes LeakyReLU(0.3)'s alpha as its float32, 0.30000001192092896: read as
    Keras 3's negative_slope=0.3, the number the user wrote (both compute with its float32)."""
    leaky, relu = (read_model(fixture(name)).layers[i].config for i in (2, 5))
    assert (leaky["negative_slope"], "alpha" in leaky) == (0.3, False)
    assert (relu["max_value"], relu["negative_slope"], relu["threshold"]) == (0.5, 0.0, 0.0)


def test_keras2_float32_options_keep_what_is_no_float32() -> None:
    from lstm_embed.frontends.keras.normalize import float32_decimal, layer_config

    alpha = float(np.float32(0.3))
    assert layer_config("LeakyReLU", {"alpha": alpha}, keras2=True) == {"negative_slope": 0.3}
    assert layer_config("LeakyReLU", {"alpha": alpha}) == {"alpha": alpha}  # Keras 3: as is
    assert float32_decimal(float(np.float32(0.123456789))) == 0.12345679
    for value in (0.1, 1e300, "6.0", None, True, 3):  # no float32, or no float: unchanged
        assert float32_decimal(value) is value


def test_keras2_time_major_true_is_kept(tmp_path: Path) -> None:
    path = h5_copy("lstm_dense.k2.h5", tmp_path, config=lambda c: _set(c, 1, time_major=True))
    assert read_model(path).layers[0].config["time_major"] is True


def test_activation_dicts(tmp_path: Path) -> None:
    builtin = {
        "module": "keras.activations",
        "class_name": "function",
        "config": "tanh",
        "registered_name": "tanh",
    }
    user = {"module": "builtins", "class_name": "function", "config": "tanh"}

    def edit(config: dict) -> None:
        _set(config, 1, activation=builtin, recurrent_activation=dict(builtin, config="sigmoid"))
        _set(config, 2, activation=user)

    spec = read_model(zip_copy("lstm_dense.k3.keras", tmp_path, config=edit))
    assert spec.layers[0].config["activation"] == "tanh"
    assert spec.layers[0].config["recurrent_activation"] == "sigmoid"
    assert spec.layers[1].config["activation"] == user  # a user's "tanh" is not Keras' tanh


@pytest.mark.parametrize("ext", ["h5", "keras"])
def test_keras2_sequential_without_input_layer(tmp_path: Path, ext: str) -> None:
    """Older tf.keras wrote no InputLayer: the first layer's batch_input_shape is the input."""
    name = f"no_input_layer.k2.{ext}"

    def drop_input(config: dict) -> None:
        layers = config["config"]["layers"]
        assert layers[0]["class_name"] == "InputLayer"
        del layers[0]

    copy = h5_copy if ext == "h5" else zip_copy
    spec = read_model(copy(name, tmp_path, config=drop_input))
    assert spec.input_shape == (4, 2)
    assert [layer.class_name for layer in spec.layers] == ["LSTM", "Dense"]
    assert "batch_input_shape" not in spec.layers[0].config
    assert np.array_equal(spec.layers[0].weights[2], npz(name)["w/lstm/2"])


def test_tf213_layer_checkpoint_dependencies_key(tmp_path: Path) -> None:
    """tf_keras 2.13 wrote a model's layers under _layer_checkpoint_dependencies."""

    def rename(f: h5py.File) -> None:
        f.move("layers", "_layer_checkpoint_dependencies")

    spec = read_model(zip_copy("stacked.k2.keras", tmp_path, weights=rename))
    assert np.array_equal(spec.layers[2].weights[1], npz("stacked.k2.keras")["w/lstm_1/1"])


def test_oldest_keras2_sequential_config_is_a_bare_list(tmp_path: Path) -> None:
    def bare(config: dict) -> None:
        config["config"] = config["config"]["layers"][1:]  # no InputLayer, no name

    spec = read_model(h5_copy("no_input_layer.k2.h5", tmp_path, config=bare))
    assert spec.input_shape == (4, 2) and spec.name == "sequential"
    assert [layer.param_count for layer in spec.layers] == [72, 4]


def test_version_guessed_when_not_recorded(tmp_path: Path) -> None:
    def forget(f: h5py.File) -> None:
        del f.attrs["keras_version"], f["model_weights"].attrs["keras_version"]

    assert read_model(h5_copy("lstm_dense.k2.h5", tmp_path, edit=forget)).file_format == (
        "keras2 .h5"
    )
    assert read_model(h5_copy("lstm_dense.k3.h5", tmp_path, edit=forget)).file_format == (
        "keras3 .h5"
    )
    spec = read_model(zip_copy("lstm_dense.k2.keras", tmp_path, drop="metadata.json"))
    assert (spec.file_format, spec.keras_version) == ("keras2 .keras", "")


def test_meta_records_backend_and_date() -> None:
    assert read_model(fixture("lstm_dense.k3.h5")).meta == {"backend": "tensorflow"}
    assert "date_saved" in read_model(fixture("lstm_dense.k3.keras")).meta


# --- layers the registry refuses later: they pass through -----------------------------------


def test_lambda_passes_through_undecoded(tmp_path: Path) -> None:
    function = {"class_name": "__lambda__", "config": {"code": "!! not base64, never decoded !!"}}
    lam = {
        "module": "keras.layers",
        "class_name": "Lambda",
        "config": {"name": "lambda", "function": function, "arguments": {}},
        "registered_name": None,
    }

    def weights(f: h5py.File) -> None:
        f.create_group("layers/lambda/vars")

    path = zip_copy(
        "lstm_dense.k3.keras",
        tmp_path,
        config=lambda c: c["config"]["layers"].insert(2, lam),
        weights=weights,
    )
    spec = read_model(path)
    assert [layer.class_name for layer in spec.layers] == ["LSTM", "Lambda", "Dense"]
    assert spec.layers[1].config["function"] == function
    assert spec.layers[1].weights == ()


def test_custom_classes_pass_through(tmp_path: Path) -> None:
    def custom_keras(config: dict) -> None:
        config["config"]["layers"][2].update(
            module=None, class_name="Scale", registered_name="MyPkg>Scale"
        )

    spec = read_model(zip_copy("lstm_dense.k3.keras", tmp_path, config=custom_keras))
    dense = spec.layers[1]  # Keras 3 writes the layer name in the weights: found by it
    assert (dense.class_name, dense.module, dense.registered_name) == ("Scale", "", "MyPkg>Scale")
    assert np.array_equal(dense.weights[0], npz("lstm_dense.k3.keras")["w/dense/0"])

    def custom_h5(config: dict) -> None:
        config["config"]["layers"][2]["class_name"] = "MyPkg>Scale"

    spec = read_model(h5_copy("lstm_dense.k2.h5", tmp_path, config=custom_h5))
    dense = spec.layers[1]
    assert (dense.class_name, dense.module, dense.registered_name) == ("Scale", "", "MyPkg>Scale")
    assert dense.param_count == 8

    def unknown(config: dict) -> None:
        config["config"]["layers"][2].update(class_name="Mystery", module="somewhere")

    def move(f: h5py.File) -> None:
        f.move("layers/dense", "layers/mystery")  # where tf_keras would have put it

    spec = read_model(zip_copy("lstm_dense.k2.keras", tmp_path, config=unknown, weights=move))
    assert (spec.layers[1].class_name, spec.layers[1].module) == ("Mystery", "somewhere")
    assert spec.layers[1].param_count == 8


def test_absurd_config_numbers_allocate_nothing(tmp_path: Path) -> None:
    path = zip_copy("lstm_dense.k3.keras", tmp_path, config=lambda c: _set(c, 1, units=10**9))
    start = time.perf_counter()
    spec = read_model(path)
    assert time.perf_counter() - start < 1.0
    assert spec.layers[0].config["units"] == 10**9
    assert spec.layers[0].param_count == 72  # shapes come from the file; the kinds compare


# --- hostile and unsupported files ----------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.keras", "no such file")


def test_saved_model_folder(tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    expect_error(folder, "SavedModel", 'model.save("model.keras")', "TensorFlow/Keras that made it")


def test_other_folder(tmp_path: Path) -> None:
    expect_error(tmp_path, "is a folder", ".keras or .h5")


@pytest.mark.parametrize("suffix", [".pt", ".onnx", ".json", ""])
def test_unsupported_suffix(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    shutil.copy(fixture("lstm_dense.k3.keras"), path)
    expect_error(path, "unsupported file type", ".keras", ".h5")


def test_graph_pb_file(tmp_path: Path) -> None:
    path = tmp_path / "saved_model.pb"
    path.write_bytes(b"\x08\x01")
    expect_error(path, "TensorFlow graph", 'model.save("model.keras")')


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("lstm_dense.k3.keras", "not a zip"), ("lstm_dense.k2.h5", "HDF5")],
)
def test_truncated(tmp_path: Path, name: str, fragment: str) -> None:
    data = fixture(name).read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, fragment, "truncated")


@pytest.mark.parametrize("name", ["random.keras", "random.h5"])
def test_random_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(7).bytes(5000))
    expect_error(path, "not a")


@pytest.mark.parametrize(
    ("member", "fragment"),
    [("config.json", "no config.json"), ("model.weights.h5", "no model.weights.h5")],
)
def test_keras_archive_missing_member(tmp_path: Path, member: str, fragment: str) -> None:
    expect_error(zip_copy("lstm_dense.k2.keras", tmp_path, drop=member), fragment, "model.save")


def test_weights_only_h5(tmp_path: Path) -> None:
    def strip(f: h5py.File) -> None:
        del f.attrs["model_config"]

    expect_error(h5_copy("lstm_dense.k3.h5", tmp_path, edit=strip), "weights only", "model.save")


@pytest.mark.parametrize("name", ["lstm_dense.k3.keras", "lstm_dense.k2.h5"])
def test_malformed_json(tmp_path: Path, name: str) -> None:
    copy = zip_copy if name.endswith(".keras") else h5_copy
    expect_error(copy(name, tmp_path, raw_config='{"class_name": "Sequential", '), "not valid JSON")


def test_deeply_nested_json(tmp_path: Path) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    expect_error(zip_copy("lstm_dense.k3.keras", tmp_path, raw_config=deep), "JSON")


def test_config_that_is_no_model(tmp_path: Path) -> None:
    expect_error(zip_copy("lstm_dense.k3.keras", tmp_path, raw_config="[]"), "no class_name")
    subclassed = '{"class_name": "MyModel", "config": {"name": "m"}}'
    path = zip_copy("lstm_dense.k3.keras", tmp_path, raw_config=subclassed)
    expect_error(path, "'MyModel'", "subclassed")


def test_layer_weights_missing(tmp_path: Path) -> None:
    def drop_zip(f: h5py.File) -> None:
        del f["layers/dense"]

    path = zip_copy("lstm_dense.k3.keras", tmp_path, weights=drop_zip)
    expect_error(path, "layer 'dense' has no weights")

    def drop_h5(f: h5py.File) -> None:
        del f["model_weights/dense"]

    expect_error(
        h5_copy("lstm_dense.k2.h5", tmp_path, edit=drop_h5), "layer 'dense' has no weights"
    )

    def drop_dataset(f: h5py.File) -> None:
        del f["model_weights/lstm/lstm/lstm_cell/bias:0"]

    path = h5_copy("lstm_dense.k2.h5", tmp_path, edit=drop_dataset)
    expect_error(path, "'lstm/lstm_cell/bias:0'", "layer 'lstm'", "missing")


def _huge(group: h5py.Group, name: str) -> None:
    del group[name]
    # declared, never written: the file stays small, reading it would allocate 128 MiB
    group.create_dataset(name, shape=(2 * MAX_WEIGHT_ELEMENTS,), dtype="f4", chunks=(1024,))


def test_weights_too_large_are_refused_unread(tmp_path: Path) -> None:
    path = h5_copy(
        "lstm_dense.k2.h5", tmp_path, edit=lambda f: _huge(f, "model_weights/dense/dense/kernel:0")
    )
    assert path.stat().st_size < 1_000_000
    start = time.perf_counter()
    expect_error(path, "MAX_WEIGHT_ELEMENTS")
    assert time.perf_counter() - start < 1.0
    path = zip_copy(
        "lstm_dense.k3.keras", tmp_path, weights=lambda f: _huge(f, "layers/dense/vars/0")
    )
    expect_error(path, "MAX_WEIGHT_ELEMENTS")


@pytest.mark.parametrize(
    ("member", "fragment"),
    [("model.weights.h5", "MAX_MEMBER_BYTES"), ("config.json", "MAX_JSON_BYTES")],
)
def test_absurd_zip_member_size(tmp_path: Path, member: str, fragment: str) -> None:
    data = bytearray(fixture("lstm_dense.k3.keras").read_bytes())
    _claim_size(data, member.encode(), MAX_MEMBER_BYTES + 12345)
    path = tmp_path / "absurd.keras"
    path.write_bytes(bytes(data))
    expect_error(path, member, "claims", fragment)


def _claim_size(data: bytearray, member: bytes, size: int) -> None:
    """Rewrite a member's uncompressed size in the zip's central directory."""
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46 : pos + 46 + name_len]) == member:
            struct.pack_into("<I", data, pos + 24, size)
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(member)


def test_links_and_storage_outside_the_file_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "other.h5"
    with h5py.File(secret, "w") as f:
        f["kernel:0"] = np.ones((3, 2), np.float32)

    def link(f: h5py.File) -> None:
        del f["model_weights/dense/dense/kernel:0"]
        f["model_weights/dense/dense/kernel:0"] = h5py.ExternalLink(str(secret), "kernel:0")

    expect_error(h5_copy("lstm_dense.k2.h5", tmp_path, edit=link), "links to another file")
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones(6, np.float32).tobytes())

    def external(f: h5py.File) -> None:
        del f["model_weights/dense/dense/kernel:0"]
        f.create_dataset(
            "model_weights/dense/dense/kernel:0", (3, 2), "f4", external=[(str(raw), 0, 24)]
        )

    expect_error(h5_copy("lstm_dense.k2.h5", tmp_path, edit=external), "outside the file")


def test_integer_weights_are_refused(tmp_path: Path) -> None:
    def to_int(f: h5py.File) -> None:
        del f["layers/dense/vars/0"]
        f["layers/dense/vars/0"] = np.ones((3, 2), np.int8)

    path = zip_copy("lstm_dense.k3.keras", tmp_path, weights=to_int)
    expect_error(path, "dtype int8", "only float weights")


def test_keras1_files_are_refused(tmp_path: Path) -> None:
    def old(f: h5py.File) -> None:
        f.attrs["keras_version"] = "1.2.2"

    expect_error(h5_copy("lstm_dense.k2.h5", tmp_path, edit=old), "Keras 1.2.2", "Keras 2 and 3")


# --- functional models: single chains only --------------------------------------------------


def _k3_tensor(layer: str) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"keras_history": [layer, 0, 0]}}


def _two_inputs(config: dict) -> None:
    dense = config["config"]["layers"][2]
    if isinstance(dense["inbound_nodes"][0], dict):  # Keras 3
        dense["inbound_nodes"][0]["args"] = [[_k3_tensor("lstm"), _k3_tensor("lstm")]]
    else:  # Keras 2
        dense["inbound_nodes"] = [[["lstm", 0, 0, {}], ["lstm", 0, 0, {}]]]


def _two_outputs(config: dict) -> None:
    config["config"]["output_layers"] = [["dense", 0, 0], ["lstm", 0, 0]]


def _branch(config: dict) -> None:
    layers = config["config"]["layers"]
    extra = json.loads(json.dumps(layers[2]))
    extra["name"] = extra["config"]["name"] = "extra"
    layers.append(extra)


def _shared(config: dict) -> None:
    dense = config["config"]["layers"][2]
    dense["inbound_nodes"] = dense["inbound_nodes"] * 2


@pytest.mark.parametrize(
    "name", ["functional_chain.k3.keras", "functional_chain.k2.keras", "functional_chain.k2.h5"]
)
@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (_two_inputs, ("layer 'dense' takes 2 inputs", "only single-chain models are supported")),
        (_two_outputs, ("has 2 outputs", "single-chain")),
        (_branch, ("layer 'lstm' feeds 2 layers", "'dense'", "'extra'", "single-chain")),
        (_shared, ("layer 'dense' is called 2 times", "single-chain")),
    ],
)
def test_functional_that_is_no_chain(
    tmp_path: Path, name: str, edit: Callable[[dict], None], fragments: tuple[str, ...]
) -> None:
    copy = zip_copy if name.endswith(".keras") else h5_copy
    expect_error(copy(name, tmp_path, config=edit), *fragments)


# --- robustness, imports, speed -------------------------------------------------------------


CHILD_READER = """
import json, sys
from lstm_embed.frontends.keras.reader import ReaderError, read_model
for path in sys.argv[1:]:
    try:
        read_model(path)
        print(json.dumps(["ok", path]), flush=True)
    except ReaderError as exc:
        print(json.dumps(["error", str(exc)]), flush=True)
    except BaseException as exc:
        print(json.dumps(["escaped", f"{path}: {type(exc).__name__}: {exc}"]), flush=True)
"""


def read_in_child(paths: list[Path], timeout: float = 60) -> list[tuple[str, str]]:
    """read_model on each path in a child process, so a libhdf5 crash or hang fails the test
    instead of taking pytest down with it."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD_READER, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )
    assert result.returncode == 0, f"the reader crashed: {result.stderr[-2000:]}"
    return [tuple(json.loads(line)) for line in result.stdout.splitlines()]


def _mutations(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        mutated = bytearray(data)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 24))):
            mutated[pos] = int(rng.integers(0, 256))
        if i % 6 == 5:
            mutated = mutated[: int(rng.integers(1, len(data)))]
        out.append(bytes(mutated))
    return out


@pytest.mark.parametrize(
    "name", ["lstm_dense.k3.h5", "nested.k2.h5", "nested.k3.keras", "bidirectional.k2.keras"]
)
def test_corrupted_bytes_give_a_spec_or_a_reader_error(tmp_path: Path, name: str) -> None:
    """Random byte changes (in .keras: inside model.weights.h5, with the zip's CRC made valid)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    paths = []
    if name.endswith(".keras"):
        with zipfile.ZipFile(fixture(name)) as src:
            members = {info.filename: src.read(info) for info in src.infolist()}
        for i, mutated in enumerate(_mutations(members["model.weights.h5"], rng, 40)):
            paths.append(tmp_path / f"{i}.keras")
            with zipfile.ZipFile(paths[-1], "w") as dst:
                for member, data in members.items():
                    dst.writestr(member, mutated if member == "model.weights.h5" else data)
    else:
        for i, mutated in enumerate(_mutations(fixture(name).read_bytes(), rng, 40)):
            paths.append(tmp_path / f"{i}.h5")
            paths[-1].write_bytes(mutated)
    results = read_in_child(paths)
    assert len(results) == len(paths)
    for (outcome, text), path in zip(results, paths, strict=True):
        assert outcome in ("ok", "error"), text
        assert text.startswith(str(path)) and "\n" not in text, text


def _global_heap(data: bytearray) -> tuple[int, int]:
    """Offset and size of the first HDF5 global heap collection (the vlen strings)."""
    offset = data.find(b"GCOL")
    return offset, struct.unpack_from("<Q", data, offset + 8)[0]


@pytest.mark.parametrize(("index", "size"), [(0, 0), (3, 2**40)])
def test_damaged_global_heap_is_refused_before_libhdf5_loops(
    tmp_path: Path, index: int, size: int
) -> None:
    """libhdf5 1.14 loops forever on a heap object of size 0 (found by fuzzing the fixtures)."""
    data = bytearray(fixture("lstm_dense.k2.h5").read_bytes())
    offset, _ = _global_heap(data)
    struct.pack_into("<HHIQ", data, offset + 16, index, 0, 0, size)  # the first object
    path = tmp_path / "heap.h5"
    path.write_bytes(bytes(data))
    [(outcome, text)] = read_in_child([path], timeout=20)
    assert outcome == "error" and "global heap" in text and "damaged" in text, text


def test_reading_imports_no_framework() -> None:
    code = (
        "import sys; import lstm_embed.frontends.keras.reader as r; r.read_model(sys.argv[1]);"
        " bad = sorted({m.split('.')[0] for m in sys.modules}"
        " & {'keras', 'tensorflow', 'tf_keras', 'jax', 'torch', 'flax'}); print(bad)"
    )
    for name in ("nested.k3.keras", "lstm_dense.k2.h5"):
        result = subprocess.run(
            [sys.executable, "-c", code, str(fixture(name))],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        assert result.stdout.strip() == "[]", result.stdout + result.stderr


ALLOWED_IMPORTS = {"zipfile", "json", "h5py", "numpy", "__future__"}
FORBIDDEN_NAMES = {"pickle", "marshal", "eval", "exec", "compile", "base64", "importlib"}


def test_reader_sources_import_only_the_allowed_modules() -> None:
    stdlib = set(sys.stdlib_module_names) - {"pickle", "marshal", "shelve", "importlib", "ctypes"}
    for source in sorted((REPO / "lstm_embed" / "reader").glob("*.py")):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = set() if node.level else {(node.module or "").split(".")[0]}
            else:
                if isinstance(node, ast.Name):
                    assert node.id not in FORBIDDEN_NAMES, (source.name, node.id)
                continue
            for root in roots:
                assert root in ALLOWED_IMPORTS or root in stdlib, (source.name, root)
                assert root not in FORBIDDEN_NAMES, (source.name, root)


@pytest.mark.parametrize("ext", ["k3.keras", "k3.h5", "k2.h5", "k2.keras"])
def test_reading_a_tiny_model_is_fast(ext: str) -> None:
    path = fixture(f"lstm_tiny.{ext}")
    read_model(path)  # warm: imports and file cache
    start = time.perf_counter()
    spec = read_model(path)
    assert time.perf_counter() - start < 0.05
    assert sum(layer.param_count for layer in spec.layers) == 12


# --- making hostile copies ------------------------------------------------------------------


def _set(config: dict, index: int, **values: Any) -> None:
    config["config"]["layers"][index]["config"].update(values)


def zip_copy(
    name: str,
    tmp_path: Path,
    config: Callable[[dict], Any] | None = None,
    raw_config: str | None = None,
    weights: Callable[[h5py.File], Any] | None = None,
    drop: str | None = None,
) -> Path:
    """A copy of a .keras fixture with its config and/or weights edited, or a member dropped."""
    out = tmp_path / f"edited_{len(list(tmp_path.iterdir()))}.keras"
    with zipfile.ZipFile(fixture(name)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == drop:
                continue
            if info.filename == "config.json" and (config or raw_config is not None):
                data = (raw_config if raw_config is not None else _edited(data, config)).encode()
            if info.filename == "model.weights.h5" and weights:
                scratch = tmp_path / "scratch.h5"
                scratch.write_bytes(data)
                with h5py.File(scratch, "r+") as f:
                    weights(f)
                data = scratch.read_bytes()
            dst.writestr(info.filename, data)
    return out


def h5_copy(
    name: str,
    tmp_path: Path,
    config: Callable[[dict], Any] | None = None,
    raw_config: str | None = None,
    edit: Callable[[h5py.File], Any] | None = None,
) -> Path:
    """A copy of an .h5 fixture with its model_config and/or groups edited."""
    out = tmp_path / f"edited_{len(list(tmp_path.iterdir()))}.h5"
    shutil.copy(fixture(name), out)
    with h5py.File(out, "r+") as f:
        if config or raw_config is not None:
            text = (
                raw_config if raw_config is not None else _edited(f.attrs["model_config"], config)
            )
            f.attrs["model_config"] = text
        if edit:
            edit(f)
    return out


def _edited(text: str | bytes, edit: Callable[[dict], Any] | None) -> str:
    config = json.loads(text)
    if edit:
        edit(config)
    return json.dumps(config)
