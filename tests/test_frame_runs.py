"""Frame runs of run-only models (``emit/window_plan.py``): the layers after a layer of valid
geometry along time step on each of its output steps as it is made, so only the run's last
layer writes a window buffer.

Random-weight Keras chains that put each shape of run into the plan (a fused Conv1D + pooling
head, a lone strided Conv1D or Conv2D head; tails of Dense and activations through both
frame_q rows, a causal Conv1D with its own state, recurrent layers inside the run and at its end,
returning sequences or one vector, layers after the run that need the whole window). Each is
held to: the plan has the run it is built for; the host C (strict warnings, ASan/UBSan) equals
the numpy reference bit for bit on every entry point, on the whole window and on shorter ones;
its window buffers hold less than the layer-by-layer plan's; and, for three of
them, the Cortex-M0, M4 and M55 firmware in QEMU equals the reference too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lstm_embed.emit import window_plan
from lstm_embed.emit.window_plan import frame_runs, fused_pairs, window_buffers
from lstm_embed.frontends.keras.frontend import read_keras_model
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize.qir import QModel

from .helpers import edge_inputs, host_difference, qemu_difference

T = 24


@dataclass(frozen=True)
class Chain:
    shape: tuple[int, ...]  # the Keras input shape after the batch axis
    layers: Callable[[], list]  # the Keras layers, built when keras is imported
    run: tuple[int, ...]  # the layers of the frame run the plan must hold: head, then tail
    pair: bool = False  # the head is the second of a fused pair


def _chains() -> dict[str, Chain]:
    import keras

    L = keras.layers
    return {
        # pair head; Dense tails alternate the frame_q rows (the tanh folds into the Dense
        # before it); the LSTM returns one vector (copied out once the loop ends)
        "pair_dense_lstm": Chain(
            (T, 3),
            lambda: [
                L.Conv1D(6, 3, activation="relu"),
                L.MaxPooling1D(2),
                L.Dense(5),
                L.Activation("tanh"),
                L.Dense(4),
                L.LSTM(7),
                L.Dense(2),
            ],
            (1, 2, 3, 4),
            pair=True,
        ),
        # strided Conv1D head; a sequence-returning GRU inside the run, a SimpleRNN ending it
        # with its sequence (copied per output step into the buffer Flatten reads)
        "strided_two_recurrent_sequence_out": Chain(
            (T, 4),
            lambda: [
                L.Conv1D(5, 4, strides=2),
                L.GRU(6, return_sequences=True),
                L.SimpleRNN(3, return_sequences=True),
                L.Flatten(),
                L.Dense(2),
            ],
            (0, 1, 2),
        ),
        # a causal Conv1D (state of its own) and a Dense ending the run on a buffer, read by a
        # GlobalAveragePooling1D that needs the whole window
        "causal_tail_then_window_layer": Chain(
            (T, 2),
            lambda: [
                L.AveragePooling1D(3, strides=2),
                L.Conv1D(4, 3, padding="causal"),
                L.LSTM(5, return_sequences=True),
                L.Dense(3, activation="relu"),
                L.GlobalAveragePooling1D(),
                L.Dense(2),
            ],
            (0, 1, 2, 3),
        ),
        # Conv2D head on (T, F, C) frames, a pooling along F only, a GRU returning one vector
        # (the Reshape that regroups nothing leaves the chain before the plan)
        "conv2d_pool_reshape_gru": Chain(
            (T, 10, 1),
            lambda: [
                L.Conv2D(3, (3, 3), activation="relu"),
                L.MaxPooling2D((1, 2)),
                L.Reshape((T - 2, 12)),
                L.GRU(6),
                L.Dense(2),
            ],
            (0, 1, 2),
        ),
    }


CHAINS = _chains
NAMES = (
    "pair_dense_lstm",
    "strided_two_recurrent_sequence_out",
    "causal_tail_then_window_layer",
    "conv2d_pool_reshape_gru",
)
QEMU_NAMES = ("pair_dense_lstm", "strided_two_recurrent_sequence_out", "conv2d_pool_reshape_gru")


@dataclass(frozen=True)
class Converted:
    qmodel: QModel
    out: Path
    x: np.ndarray  # float32 (N, T, m) as the C takes it


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Converted]:
    import keras

    cache: dict[str, Converted] = {}

    def get(name: str) -> Converted:
        if name not in cache:
            chain = CHAINS()[name]
            keras.utils.set_random_seed(sum(map(ord, name)))
            model = keras.Sequential([keras.Input(chain.shape), *chain.layers()])
            rng = np.random.default_rng(len(name))
            x = rng.normal(size=(160, *chain.shape)).astype(np.float32)
            out = tmp_path_factory.mktemp(name) / "out"
            conversion = convert_ir(read_keras_model(model), x[:128], out)
            cache[name] = Converted(conversion.qmodel, out, x[128:].reshape(32, T, -1))
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_the_plan_holds_the_run(converted, name: str) -> None:
    chain = CHAINS()[name]
    qmodel = converted(name).qmodel
    assert not qmodel.streaming
    runs = frame_runs(qmodel)
    assert [(head, *tail) for head, tail in runs.items()] == [chain.run]
    assert (chain.run[0] - 1 in fused_pairs(qmodel)) is chain.pair


@pytest.mark.parametrize("name", NAMES)
def test_host_c_equals_reference(converted, name: str) -> None:
    case = converted(name)
    x_q, x = edge_inputs(case.qmodel, case.x)
    assert host_difference(case.out, case.qmodel, x_q, x, sanitize=True) is None
    short = T - 5  # fewer timesteps than the window (models without Reshape/Flatten)
    if not any(la.exact_timesteps for la in case.qmodel.layers):
        difference = host_difference(case.out, case.qmodel, x_q[:, :short], x[:, :short])
        assert difference is None, difference


@pytest.mark.parametrize("name", NAMES)
def test_runs_store_less_than_layer_by_layer(converted, name: str, monkeypatch) -> None:
    """The window buffers with the runs hold less than the plan without them, in which every
    layer's outputs over the window sit in a buffer."""
    case = converted(name)
    planned = window_buffers(case.qmodel)
    monkeypatch.setattr(window_plan, "frame_runs", lambda model: {})
    monkeypatch.setattr(window_plan, "fused_pairs", lambda model: [])
    layer_by_layer = window_buffers(case.qmodel)
    print(f"{name}: window buffers {sum(planned)} int16 values, {sum(layer_by_layer)} without")
    assert sum(planned) < sum(layer_by_layer)


@pytest.mark.firmware
@pytest.mark.parametrize("board", ["qemu-m0", "qemu-m4", "qemu-m55"])
@pytest.mark.parametrize("name", QEMU_NAMES)
def test_qemu_equals_reference(toolchain, converted, name: str, board: str) -> None:
    case = converted(name)
    x_q, x = edge_inputs(case.qmodel, case.x)
    difference = qemu_difference(case.out, case.qmodel, board, x_q[-4:], x[-4:])
    assert difference is None, f"{name} on {board}: {difference}"
