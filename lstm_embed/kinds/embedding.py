"""Embedding(input_dim, output_dim, mask_zero): integer token ids -> rows of a table.

The chain's input stays a sequence of feature vectors: an Embedding model's input is one
feature per timestep, the id, with input scale 1 (``takes_ids``), so that int16 x_q holds the id
itself and run()/step() take ids (int16: vocabularies up to ``MAX_IDS``), and the float entry
points (run_f32/step_f32) take floats holding integers (rounded to the nearest, as every float
input is quantized). An id outside [0, input_dim - 1] is clamped into it in C and in the numpy
reference (a documented saturation); the host entry points refuse such ids first
(``targets.inputs``).

The table is int8 or int16 (the layer's --weights), symmetric, one scale per output feature
(column): the output is the table row widened to int16, so the next layer folds those scales in
as it folds any feature scales; nothing is rounded beyond the table itself.

mask_zero=True: id 0 masks the timestep exactly as a Masking layer does (``kinds.masking``:
the recurrent layers the mask reaches keep their state and repeat their output). Unlike
Masking, the Embedding still outputs id 0's row there (Keras does). run()/step() test the int16
id, run_f32()/step_f32() the float id, both against 0.
Template: templates/kinds/embedding/ (layer.c.j2: the table, the lookup and the mask tests).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.kinds.base import (
    FloatLayer,
    IRError,
    LayerTrace,
    QLayer,
    QuantContext,
    QuantizeError,
    check_finite,
    check_shape,
)
from lstm_embed.quantize import fixedpoint as fp

MAX_IDS = fp.INT16_MAX + 1  # ids travel as int16 through run()/step()


def clamp_ids(x: np.ndarray, input_dim: int) -> np.ndarray:
    """(..., 1) id features -> int64 ids (...), rounded half away and clamped into
    [0, input_dim - 1] (the C's saturation)."""
    ids = np.asarray(x)[..., 0]
    ids = fp.round_half_away(np.asarray(ids, np.float64)) if ids.dtype.kind == "f" else ids
    return np.clip(np.asarray(ids, np.int64), 0, input_dim - 1)


@dataclass(frozen=True)
class EmbeddingLayer(FloatLayer):
    kind: ClassVar[str] = "embedding"
    type_name: ClassVar[str] = "Embedding"
    takes_ids: ClassVar[bool] = True
    name: str
    input_size: int  # 1: the id
    table: np.ndarray  # (input_dim, output_dim)
    mask_zero: bool = False

    def __post_init__(self) -> None:
        if self.input_size != 1:
            raise IRError(f"layer '{self.name}': takes one id per timestep, not {self.input_size}")
        table = np.asarray(self.table)
        if table.ndim != 2:
            raise IRError(f"layer '{self.name}': embeddings shape {table.shape} is not 2-D")
        check_shape(self.name, "embeddings", table, (self.input_dim, self.output_size))
        check_finite(self.name, "embeddings", table)
        if not 1 <= self.input_dim <= MAX_IDS:
            raise IRError(
                f"layer '{self.name}': input_dim={self.input_dim} is not supported (supported:"
                f" 1 to {MAX_IDS}; ids travel as int16)"
            )

    @property
    def input_dim(self) -> int:
        return int(self.table.shape[0])

    @property
    def output_size(self) -> int:
        return int(self.table.shape[1])

    @property
    def computes_mask(self) -> bool:  # type: ignore[override]
        return self.mask_zero

    @property
    def params(self) -> int:
        return int(self.table.size)

    def mask_of(self, x: np.ndarray) -> np.ndarray:
        """(N, T) True where the id is 0 (Keras' compute_mask: inputs != 0)."""
        return float_id_mask(x)

    def forward(self, x: np.ndarray) -> LayerTrace:
        return LayerTrace(np.asarray(self.table, np.float64)[clamp_ids(x, self.input_dim)])

    def quantize(self, ctx: QuantContext) -> QEmbeddingLayer:
        table_q, scale = fp.quantize_rows(np.asarray(self.table, np.float64).T, ctx.bits)
        return QEmbeddingLayer(
            self.name, self.input_size, np.ascontiguousarray(table_q.T), scale, self.mask_zero
        )

    def summary(self) -> dict[str, Any]:
        formula = f"{self.input_dim}*{self.output_size}"
        return {"type": "Embedding", "activation": None, "units": self.output_size,
                "params_formula": formula}  # fmt: skip

    def flash_bytes(self, bits: int) -> int:
        return self.table.size * bits // 8

    def dequantized(self, qlayer: QEmbeddingLayer, feature_scale: np.ndarray) -> EmbeddingLayer:
        return replace(self, table=qlayer.table_q * qlayer.scale[None, :])


def float_id_mask(x: np.ndarray) -> np.ndarray:
    """(...) True where the float id (..., 1) equals 0 (float32 compare, as Masking's)."""
    return np.asarray(x, np.float32)[..., 0] == np.float32(0)


@dataclass(frozen=True)
class QEmbeddingLayer(QLayer):
    """Output: row ``clamp(id)`` of the int8/int16 table, widened to int16, one scale per
    output feature."""

    kind: ClassVar[str] = "embedding"
    template: ClassVar[str] = "kinds/embedding/layer.c.j2"
    takes_ids: ClassVar[bool] = True
    name: str
    input_size: int
    table_q: np.ndarray  # (input_dim, output_dim) int8 or int16
    scale: np.ndarray  # (output_dim,) real value of one LSB of each output feature
    mask_zero: bool = False

    @property
    def input_dim(self) -> int:
        return int(self.table_q.shape[0])

    @property
    def output_size(self) -> int:
        return int(self.table_q.shape[1])

    @property
    def computes_mask(self) -> bool:  # type: ignore[override]
        return self.mask_zero

    @property
    def output_feature_scale(self) -> np.ndarray:
        return np.asarray(self.scale, np.float64)

    @property
    def macs(self) -> int:
        return 0

    @property
    def weight_bits(self) -> int:
        return 8 if self.table_q.dtype == np.int8 else 16

    def integer_mask(self, x_q: np.ndarray) -> np.ndarray:
        """(N[, T]) True where the int16 id is 0."""
        return np.asarray(x_q)[..., 0] == 0

    def float_mask(self, x: np.ndarray) -> np.ndarray:
        return float_id_mask(x)

    def step(self, x_q: np.ndarray, state: Any, tables: dict, mask: np.ndarray | None = None):
        # the mask (masking.step_layer passes it) changes nothing here: Keras outputs id 0's row
        return np.asarray(self.table_q, np.int64)[clamp_ids(x_q, self.input_dim)], None

    def scratch_width(self) -> int:
        return self.output_size

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "input_dim": self.input_dim,
            "output_size": self.output_size,
            "weight_bits": self.weight_bits,
            "table": cformat.c_int_array(self.table_q, per_line=16),
            "mask_zero": self.mask_zero,
        }

    def format(self) -> str:
        return f"table int{self.weight_bits} {self.input_dim}x{self.output_size}, out int16"

    def flash_bytes(self) -> dict[str, int]:
        return {"weights": self.table_q.size * self.weight_bits // 8, "biases": 0}


def id_features(x: np.ndarray, input_dim: int, what: str) -> np.ndarray:
    """Ids (N, T) or (N, T, 1), integers or floats holding integers -> float64 (N, T, 1);
    QuantizeError (one line: ``what``, the first bad value and where) for anything else."""
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    if x.ndim != 2 or x.dtype.kind not in "fiu":
        raise QuantizeError(
            f"{what} has shape {x.shape} and dtype {x.dtype}; expected integer ids"
            " (sequences, timesteps), or floats holding them"
        )
    values = np.asarray(x, np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0) | (values >= input_dim)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise QuantizeError(
            f"{what} holds {x[where].item()!r} at (sequence, timestep) = {where}; expected"
            f" integer ids 0 to {input_dim - 1} (the Embedding's input_dim {input_dim})"
        )
    return values[..., None]


def check_chain(layers: list[FloatLayer]) -> tuple[list[FloatLayer], list[str]]:
    """FOLDS entry: the chain unchanged and a reason for every Embedding that is not first
    (its ids are the model's input; elsewhere Keras would make a tensor of rank 4)."""
    problems = [
        f"layer '{layer.name}' (Embedding): supported as the first layer (on the model's input"
        " of integer ids)"
        for index, layer in enumerate(layers)
        if layer.takes_ids and index != 0
    ]
    return layers, problems
