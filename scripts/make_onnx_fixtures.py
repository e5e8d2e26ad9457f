"""Make the ONNX fixtures in tests/fixtures/onnx/: small torch models trained on synthetic data
with fixed seeds, each exported with both torch exporters (TorchScript-based and dynamo).

    pip install torch onnx onnxruntime onnxscript   # torch: a CPU build
    python scripts/make_onnx_fixtures.py [NAME ...]   # all models, or only these

Writes, per model NAME and exporter E (``ts``: torch.onnx.export(dynamo=False), ``dynamo``):
NAME.E.onnx; per model: NAME.npz with ``calibration`` and ``test`` inputs (N, T, m), batch
first as the C takes them (token ids as (N, T, 1) floats holding the integers), and
``torch_test``, torch's outputs on ``test``. manifest.json records the torch, onnx,
onnxruntime and onnxscript versions, each file's opset and producer.
Tests read these files and need none of torch.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "onnx"
TIMESTEPS, FEATURES = 12, 3
TRAIN, CALIBRATION, TEST = 256, 64, 32
OPSET = 17  # TorchScript exporter; the dynamo exporter writes its own default (18 or later)


def import_torch():
    try:
        import torch
    except ImportError:
        sys.exit("make_onnx_fixtures: needs torch (pip install torch onnx onnxscript)")
    return torch


torch = import_torch()
nn = torch.nn


class LastStep(nn.Module):
    """nn.LSTM / nn.GRU / nn.RNN (batch_first) -> Linear on out[:, -1, :]."""

    def __init__(self, rnn: nn.Module, hidden: int, outputs: int) -> None:
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden, outputs)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1, :])


class Sequence(nn.Module):
    """nn.LSTM (batch_first) -> Linear on every timestep."""

    def __init__(self, rnn: nn.Module, hidden: int, outputs: int) -> None:
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden, outputs)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out)


class TimeMajorFinalState(nn.Module):
    """nn.LSTM with batch_first=False (input (T, N, m)) -> Linear on h_n[-1]."""

    def __init__(self, rnn: nn.Module, hidden: int, outputs: int) -> None:
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden, outputs)

    def forward(self, x):
        _, (h, _) = self.rnn(x)
        return self.head(h[-1])


class ConvLSTM(nn.Module):
    """Conv1d (channels first) + ReLU -> nn.LSTM -> Linear on the last timestep."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(FEATURES, 8, kernel_size=3)
        self.rnn = nn.LSTM(8, 12, batch_first=True)
        self.head = nn.Linear(12, 2)

    def forward(self, x):
        y = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        out, _ = self.rnn(y)
        return self.head(out[:, -1, :])


class LearnedInitialState(nn.Module):
    """nn.LSTM started from a learned (h0, c0), the same for every sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(FEATURES, 10, batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(1, 1, 10))
        self.c0 = nn.Parameter(torch.zeros(1, 1, 10))
        self.head = nn.Linear(10, 2)

    def forward(self, x):
        n = x.shape[0]
        state = (self.h0.expand(1, n, 10).contiguous(), self.c0.expand(1, n, 10).contiguous())
        out, _ = self.rnn(x, state)
        return self.head(out[:, -1, :])


class EmbeddingLSTM(nn.Module):
    """nn.Embedding over integer token ids into nn.LSTM and a head (a command classifier's
    shape); its input is (batch, timesteps) int64 ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCABULARY, 8)
        self.rnn = nn.LSTM(8, 12, batch_first=True)
        self.head = nn.Linear(12, 2)

    def forward(self, ids):
        out, _ = self.rnn(self.embed(ids))
        return self.head(out[:, -1, :])


def models() -> dict[str, tuple[Callable[[], nn.Module], bool]]:
    """name -> (constructor, time_major input)."""
    return {
        "lstm1": (lambda: LastStep(nn.LSTM(FEATURES, 12, batch_first=True), 12, 2), False),
        "lstm2_nobias_seq": (
            lambda: Sequence(
                nn.LSTM(FEATURES, 10, num_layers=2, batch_first=True, bias=False), 10, 2
            ),
            False,
        ),
        "lstm3_time_major": (
            lambda: TimeMajorFinalState(nn.LSTM(FEATURES, 8, num_layers=3), 8, 2),
            True,
        ),
        "gru_bidirectional": (
            lambda: LastStep(nn.GRU(FEATURES, 8, batch_first=True, bidirectional=True), 16, 2),
            False,
        ),
        "rnn_tanh": (lambda: LastStep(nn.RNN(FEATURES, 12, batch_first=True), 12, 2), False),
        "rnn_relu": (
            lambda: LastStep(nn.RNN(FEATURES, 12, batch_first=True, nonlinearity="relu"), 12, 2),
            False,
        ),
        "conv_lstm": (ConvLSTM, False),
        "lstm_initial_state": (LearnedInitialState, False),
        "embedding_lstm": (EmbeddingLSTM, False),
    }


# models whose input is token ids (N, T), stored in the .npz as (N, T, 1) floats holding the
# integers (the C's float entry points take ids so; run() takes them as int16)
ID_MODELS = ("embedding_lstm",)
VOCABULARY = 24


def synthetic_ids(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ids (N, T) and two targets: the decayed count of low ids, and the last ids' mean."""
    ids = rng.integers(0, VOCABULARY, (count, TIMESTEPS))
    decay = 0.8 ** np.arange(TIMESTEPS)[::-1]
    first = ((ids < VOCABULARY // 2) * decay).sum(axis=1) / 3.0
    second = ids[:, -3:].mean(axis=1) / VOCABULARY - 0.5
    return ids.astype(np.int64), np.stack([first, second], axis=1).astype(np.float32)


def synthetic(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, T, m) and two targets per sequence: a decaying sum and a late-window mean."""
    x = rng.normal(0.0, 1.0, (count, TIMESTEPS, FEATURES)).astype(np.float32)
    decay = 0.8 ** np.arange(TIMESTEPS)[::-1]
    first = np.einsum("ntm,t->n", x, decay) / 3.0
    second = x[:, -4:, 1].mean(axis=1) - x[:, :, 2].mean(axis=1)
    return x, np.stack([first, second], axis=1).astype(np.float32)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, time_major: bool, seq: bool) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if time_major:
        xt = xt.transpose(0, 1)
    if seq:  # a per-timestep target: the running targets' first one at every step
        yt = yt[:, None, :].expand(-1, TIMESTEPS, -1)
    for _ in range(150):
        optimizer.zero_grad()
        loss = ((model(xt) - yt) ** 2).mean()
        loss.backward()
        optimizer.step()


def export(model: nn.Module, example, path: Path, dynamo: bool, time_major: bool) -> None:
    """A dynamic batch axis, as deployed models have it (so the files hold the exporters'
    shape arithmetic for zero initial states)."""
    batch_axis = 1 if time_major else 0
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.onnx.export(
            model, (example,), dynamo=True, external_data=False, input_names=["x"],
            output_names=["y"], dynamic_shapes=({batch_axis: batch},),
        )  # fmt: skip
        program.save(str(path))
    else:
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=OPSET,
            input_names=["x"], output_names=["y"], dynamic_axes={"x": {batch_axis: "batch"}},
        )  # fmt: skip


def main() -> None:
    """All models, or the ones named on the command line (the manifest keeps the others')."""
    import onnx
    import onnxruntime
    import onnxscript

    only = set(sys.argv[1:])
    OUT.mkdir(parents=True, exist_ok=True)
    previous = OUT / "manifest.json"
    files = json.loads(previous.read_text())["files"] if only and previous.is_file() else {}
    manifest: dict = {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxscript": onnxscript.__version__,
        "timesteps": TIMESTEPS,
        "features": FEATURES,
        "files": files,
    }
    for index, (name, (make, time_major)) in enumerate(models().items()):
        if only and name not in only:
            continue
        torch.manual_seed(index)
        rng = np.random.default_rng(index)
        model = make()
        data = synthetic_ids if name in ID_MODELS else synthetic
        x, y = data(TRAIN, rng)
        seq = isinstance(model, Sequence)
        train(model, x, y, time_major, seq)
        model.eval()
        calibration, _ = data(CALIBRATION, rng)
        test, _ = data(TEST, rng)
        test_t = torch.from_numpy(test)
        with torch.no_grad():
            out = model(test_t.transpose(0, 1) if time_major else test_t).numpy()
        stored = {"calibration": calibration, "test": test}
        if name in ID_MODELS:
            stored = {k: v[..., None].astype(np.float32) for k, v in stored.items()}
        np.savez_compressed(
            OUT / f"{name}.npz", **stored, torch_test=out, time_major=np.array(time_major),
        )  # fmt: skip
        example = test_t[:4].transpose(0, 1) if time_major else test_t[:4]
        for exporter, dynamo in (("ts", False), ("dynamo", True)):
            path = OUT / f"{name}.{exporter}.onnx"
            export(model, example, path, dynamo, time_major)
            proto = onnx.load(str(path))
            manifest["files"][path.name] = {
                "producer": f"{proto.producer_name} {proto.producer_version}",
                "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                "exporter": "torch.onnx.export(dynamo=True)" if dynamo
                else "torch.onnx.export(dynamo=False)",
                "operators": sorted({n.op_type for n in proto.graph.node}),
            }  # fmt: skip
            print(f"{path.name}: {manifest['files'][path.name]['operators']}")
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
