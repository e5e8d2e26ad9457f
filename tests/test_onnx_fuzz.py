"""Random models written as ONNX graphs (``frontends.onnx.writer``, as ``python -m
lstm_embed.tools.fuzz --onnx`` does): onnxruntime on the written file equals the float model (so the
writer and the reader agree with the ONNX spec, not only with each other), the read-back model
equals the original, and its C equals the integer reference on the host under sanitizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lstm_embed.frontends.onnx import live, load_model
from lstm_embed.frontends.onnx.writer import NotWritable, write
from lstm_embed.ir.float_model import forward
from lstm_embed.tools import fuzz

# ONNX weights and onnxruntime's arithmetic are float32, the fuzz models' float64: a few
# float32 roundings per step
FLOAT32_TOLERANCE = 1e-3
SEEDS = range(60)  # about one in five fuzz specs has only layers ONNX has operators for here


def writable_cases(tmp_path: Path) -> list:
    cases = []
    for seed in SEEDS:
        case = fuzz.build_case(fuzz.random_spec(seed))
        try:
            path = write(case.model, tmp_path / f"seed{seed}.onnx")
        except NotWritable:
            continue
        cases.append((case, path))
    return cases


def test_written_graphs_read_back_and_match_onnxruntime(tmp_path: Path) -> None:
    cases = writable_cases(tmp_path)
    assert len(cases) >= 5
    kinds = set()
    for case, path in cases:
        model = load_model(path)
        kinds |= {la.kind for la in model.layers}
        x = np.clip(case.x[:4], -4, 4).astype(np.float64)
        with np.errstate(all="ignore"):
            original = forward(case.model, x)[0]
            read_back = forward(model, x)[0]
        if not np.all(np.isfinite(original)):
            continue  # the fuzz's extreme weights overflow float32 itself
        scale = max(1.0, float(np.max(np.abs(original))))
        # the file holds the weights in float32
        assert np.max(np.abs(read_back - original)) <= FLOAT32_TOLERANCE * scale, case.spec
        ort = live.predict(path, model.meta, x.astype(np.float32))[0]
        assert np.max(np.abs(ort - original)) <= FLOAT32_TOLERANCE * scale, case.spec
    assert {"lstm", "dense"} <= kinds


@pytest.mark.parametrize("first", [0])
def test_c_of_onnx_models_equals_reference(first: int) -> None:
    specs = [fuzz.random_spec(seed) for seed in range(first, first + 40)]
    outcomes = fuzz.check_specs(specs, jobs=1, batch_size=16, onnx=True)
    assert outcomes, "no spec was writable"
    bad = [(o.status, o.detail[:300]) for o in outcomes if o.status not in fuzz.ACCEPTED]
    assert not bad, bad
