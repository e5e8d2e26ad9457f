"""Weight rounding on graphs: nearest, gptq and auto on the trained graphs of tests/test_graph.py
(tests/graph_models.py, seed 0), calibrated on their training inputs, each measured against
Keras on 384 sequences of another seed. Prints one JSON line per model (the figures of
docs/graphs.md, "Weight rounding").

    PYTHONPATH=. .venv/bin/python scripts/graph_rounding.py [residual attention ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lstm_embed.frontends.keras.graph import load_graph
from lstm_embed.quantize.graph_quantizer import quantize_graph
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.reference import graph_run
from tests import graph_models

MODELS = ("residual", "conv_branches", "seq_static", "encoder_h", "encoder_hc", "attention",
          "attention_causal")  # fmt: skip


def measure(which: str, test_seed: int = 1) -> dict:
    model, x = graph_models.build(which)
    seq, static, _ = graph_models._data(test_seed)
    test = {"sequence": seq} | ({"static": static} if "static" in x else {})
    arrays = [test[t.name] for t in model.inputs]
    keras_y = model.predict(arrays if len(arrays) > 1 else arrays[0], verbose=0)
    keras_y = [
        np.asarray(a, np.float64) for a in (keras_y if isinstance(keras_y, list) else [keras_y])
    ]
    with tempfile.TemporaryDirectory() as folder:
        model.save(Path(folder) / "m.keras")
        graph = load_graph(Path(folder) / "m.keras")
    row: dict = {"model": which}
    for option in ("nearest", "gptq", "auto"):
        start = time.time()
        qgraph = quantize_graph(graph, x, QuantizeOptions(rounding=option))
        seconds = time.time() - start
        y = graph_run.run_float(qgraph, {k: v.astype(np.float32) for k, v in test.items()})
        error = [np.abs(a - b) for a, b in zip(y, keras_y, strict=True)]
        row[option] = {
            "max": max(float(e.max()) for e in error),
            "mean": float(np.mean(np.concatenate([e.ravel() for e in error]))),
            "pct_of_range": 100
            * max(float(e.max() / np.ptp(k)) for e, k in zip(error, keras_y, strict=True)),
            "seconds": round(seconds, 1),
            **({"record": qgraph.rounding} if option == "auto" else {}),
        }
    return row


if __name__ == "__main__":
    for name in sys.argv[1:] or MODELS:
        print(json.dumps(measure(name)), flush=True)
