"""Keras' Attention and AdditiveAttention over sequences in a graph: query, value and an
optional key (the value when absent), each (timesteps, features).

    dot:      scores[i, j] = scale * sum_d q[i, d] k[j, d]   (scale 1 without use_scale)
    additive: scores[i, j] = sum_d w[d] tanh(a (q[i, d] + k[j, d]))
    weights[i] = softmax(scores[i, j] over j)    (j <= i with use_causal_mask)
    y[i]       = sum_j weights[i, j] v[j]

The additive form covers Keras' AdditiveAttention (a = 1, w its ``scale`` vector, or ones) and
Attention(score_mode="concat") (a its ``scale``, or 1; w its ``concat_score_weight`` for every d).

It needs every timestep of its key and value: a whole-window layer (run() only).

Under a mask (a graph's mask tensor carried by both the query and the value, True at a padded
step), as Keras: a padded key's score is lowered by MASK_PENALTY before the softmax (so it
weighs nothing), a padded query's output row is 0. Integer: the padded keys are left out of
the softmax (``fixedpoint.softmax_q15_over``); a row with no key left is 0.

Integer: query and key are brought to one scale each (their largest per-feature scale; a
multiplier per feature in Q15, exact when the scales are equal, as for LSTM outputs); their
dot products are summed in int64, rounded by ``pre_shift`` into int32 and requantized to
``fixedpoint.Z_FRAC_BITS`` logits (the multiplier carries the scale and its sign); the softmax
is the Dense head's (``fixedpoint.softmax_q15``: exp without a table, rounded division) over
the timesteps; the output sums the Q0.15 weights times the value in int64, rounded by 2**15:
it keeps the value's scale per feature.

Additive scores: query and key are brought to one common scale (the larger of their largest
per-feature scales) so they can be added in int32; the sum is requantized to Z16 (the
multiplier carries a) and looked up in the tanh table (Q0.15); the weights w are int16 with
one scale; their products with the tanh values are summed in int64 and rounded into the logits
as the dot products are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from lstm_embed.kinds.base import FloatLayer, IRError, LayerTrace, QLayer, QuantContext
from lstm_embed.kinds.common import WeightlessQLayer, softmax
from lstm_embed.quantize import fixedpoint as fp

WHOLE_WINDOW_REASON = "Attention reads every timestep of its key and value"
CAUSAL_FILL = -1e9  # Keras' fill for masked scores before the softmax
MASK_PENALTY = 1e9  # Keras subtracts it from the scores of padded keys


@dataclass(frozen=True)
class AttentionLayer(FloatLayer):
    kind: ClassVar[str] = "attention"
    type_name: ClassVar[str] = "Attention"
    arity: ClassVar[int | None] = None
    streaming: ClassVar[bool] = False
    whole_window_reason: ClassVar[str] = WHOLE_WINDOW_REASON
    reads_mask: ClassVar[bool] = True  # under a mask: padded keys and queries (module doc)
    name: str
    input_sizes: tuple[int, ...]  # query, value[, key]
    scale: float = 1.0  # dot: the scores' factor; additive: a, inside the tanh
    use_scale: bool = False
    causal: bool = False
    additive: bool = False
    score_weights: tuple[float, ...] = ()  # additive: w, one per query feature
    title: str = "Attention"  # as reports name it (AdditiveAttention, Attention concat)
    weight_count: int = 0  # the trained weights the layer holds (Keras' count_params)

    def __post_init__(self) -> None:
        if len(self.input_sizes) not in (2, 3):
            raise IRError(f"layer '{self.name}': Attention takes [query, value(, key)]")
        key = self.input_sizes[2] if len(self.input_sizes) == 3 else self.input_sizes[1]
        if key != self.input_sizes[0]:
            raise IRError(
                f"layer '{self.name}': query features {self.input_sizes[0]} != key features {key}"
            )
        if self.additive and len(self.score_weights) != self.input_sizes[0]:
            raise IRError(f"layer '{self.name}': {len(self.score_weights)} score weights for"
                          f" {self.input_sizes[0]} features")  # fmt: skip

    @property
    def input_size(self) -> int:  # type: ignore[override]
        return self.input_sizes[0]

    @property
    def output_size(self) -> int:
        return self.input_sizes[1]

    @property
    def params(self) -> int:
        return self.weight_count

    def _qkv(self, xs: list[np.ndarray]):
        q, v = xs[0], xs[1]
        return q, (xs[2] if len(xs) == 3 else v), v

    def scores(self, xs: list[np.ndarray]) -> np.ndarray:
        q, k, _ = self._qkv(xs)
        if self.additive:
            u = np.tanh(self.scale * (q[:, :, None, :] + k[:, None, :, :]))
            scores = u @ np.asarray(self.score_weights, np.float64)
        else:
            scores = np.einsum("nid,njd->nij", q, k) * self.scale
        if self.causal:
            steps = scores.shape[-1]
            future = np.triu(np.ones((steps, steps), bool), k=1)
            scores = np.where(future, CAUSAL_FILL, scores)
        return scores

    def forward(self, x: np.ndarray) -> LayerTrace:
        raise IRError(f"layer '{self.name}': Attention takes several inputs")

    def forward_masked(self, xs: list[np.ndarray], mask: np.ndarray) -> LayerTrace:
        xs = [np.asarray(x, np.float64) for x in xs]
        pad = np.asarray(mask, bool)
        scores = self.scores(xs)
        scores = np.where(pad[:, None, :], scores - MASK_PENALTY, scores)
        y = np.einsum("nij,nje->nie", softmax(scores), self._qkv(xs)[2])
        y = np.where(pad[..., None], 0.0, y)
        return LayerTrace(y, gate_preactivations={"scores": scores})

    def forward_inputs(self, xs: list[np.ndarray]) -> LayerTrace:
        xs = [np.asarray(x, np.float64) for x in xs]
        scores = self.scores(xs)
        weights = softmax(scores)
        y = np.einsum("nij,nje->nie", weights, self._qkv(xs)[2])
        return LayerTrace(y, gate_preactivations={"scores": scores})

    def quantize(self, ctx: QuantContext) -> QAttentionLayer:
        scales = [np.broadcast_to(np.asarray(s, np.float64), (n,)) for s, n in
                  zip(ctx.input_scales, self.input_sizes, strict=True)]  # fmt: skip
        s_q, s_v = scales[0], scales[1]
        s_k = scales[2] if len(scales) == 3 else s_v
        common_q, common_k = float(np.max(s_q)), float(np.max(s_k))
        if self.additive:  # q + k needs one scale
            common_q = common_k = max(common_q, common_k)
        q_mult = fp.round_half_away(s_q / common_q * Q15)
        k_mult = fp.round_half_away(s_k / common_k * Q15)
        features = self.input_sizes[0]
        pre_shift = int(np.ceil(np.log2(features))) + 1
        extra: dict[str, Any] = {}
        if self.additive:
            tanh_mult, tanh_shift = fp.signed_multipliers(
                np.array([self.scale * common_q * 2.0**fp.Z_FRAC_BITS])
            )
            w = np.asarray(self.score_weights, np.float64)
            w_scale = max(float(np.max(np.abs(w))), 1e-30) / fp.weight_max(16)
            extra = {"tanh_multiplier": int(tanh_mult[0]), "tanh_shift": int(tanh_shift[0]),
                     "score_weights_q": fp.round_half_away(w / w_scale)}  # fmt: skip
            real = 2.0**pre_shift * w_scale * Q15_UNIT * 2.0**fp.Z_FRAC_BITS
        else:
            real = 2.0**pre_shift * common_q * common_k * self.scale * 2.0**fp.Z_FRAC_BITS
        multiplier, shift = fp.signed_multipliers(np.array([real]))
        return QAttentionLayer(
            name=self.name,
            input_sizes=self.input_sizes,
            causal=self.causal,
            q_mult=q_mult,
            k_mult=k_mult,
            pre_shift=pre_shift,
            multiplier=int(multiplier[0]),
            shift=int(shift[0]),
            value_scale=np.asarray(s_v, np.float64),
            max_timesteps=int(ctx.layer_input.shape[1]),
            title=self.title,
            **extra,
        )

    def summary(self) -> dict[str, Any]:
        return {"type": self.title, "activation": None, "units": None,
                "params_formula": f"{self.weight_count} (scale)"}  # fmt: skip

    def flash_bytes(self, bits: int) -> int:
        # the query's and the key's Q15 multipliers; additive: the int16 score weights
        return 4 * 2 * self.input_sizes[0] + (2 * self.input_sizes[0] if self.additive else 0)

    def dequantized(self, qlayer: Any, feature_scale: np.ndarray) -> AttentionLayer:
        return self


Q15 = 2**15
Q15_UNIT = 2.0**-15  # the real value of one Q0.15 LSB (the tanh table's output)


@dataclass(frozen=True)
class QAttentionLayer(WeightlessQLayer, QLayer):
    kind: ClassVar[str] = "attention"
    template: ClassVar[str] = "kinds/attention/layer.c.j2"
    arity: ClassVar[int | None] = None
    streaming: ClassVar[bool] = False
    whole_window_reason: ClassVar[str] = WHOLE_WINDOW_REASON
    reads_mask: ClassVar[bool] = True
    name: str
    input_sizes: tuple[int, ...]
    causal: bool
    q_mult: np.ndarray  # (query features,) Q15: the query to its common scale
    k_mult: np.ndarray  # (key features,) Q15
    pre_shift: int  # the int64 dot product's rounding into int32
    multiplier: int  # signed, with ``shift``: int32 dot product -> Z_FRAC_BITS logits
    shift: int
    value_scale: np.ndarray  # (value features,): the output's scale
    max_timesteps: int
    title: str = "Attention"
    # additive scores: (q + k) LSB -> Z16 before the tanh table, and the int16 weights w
    tanh_multiplier: int = 0
    tanh_shift: int = 0
    score_weights_q: np.ndarray | None = None

    @property
    def additive(self) -> bool:
        return self.score_weights_q is not None

    @property
    def input_size(self) -> int:  # type: ignore[override]
        return self.input_sizes[0]

    @property
    def output_size(self) -> int:
        return self.input_sizes[1]

    @property
    def output_feature_scale(self) -> np.ndarray:
        return self.value_scale

    @property
    def macs(self) -> int:
        """Per timestep of the query: a dot product and a weighted sum per key timestep."""
        return self.max_timesteps * (self.input_sizes[0] + self.input_sizes[1])

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        raise ValueError(f"layer '{self.name}': Attention takes several inputs")

    def logits(self, xs: list[np.ndarray], tables: dict) -> np.ndarray:
        q = np.asarray(xs[0], np.int64)
        k = np.asarray(xs[2] if len(xs) == 3 else xs[1], np.int64)
        q = fp.saturate_s16(fp.rounding_shift_right(q * self.q_mult, 15))
        k = fp.saturate_s16(fp.rounding_shift_right(k * self.k_mult, 15))
        if self.additive:
            u = fp.requantize(q[:, :, None, :] + k[:, None, :, :], self.tanh_multiplier,
                              self.tanh_shift)  # fmt: skip
            t = fp.tanh_q15(u, tables["tanh"]).astype(np.int64)
            acc = t @ np.asarray(self.score_weights_q, np.int64)
        else:
            acc = np.einsum("nid,njd->nij", q, k)
        acc = fp.saturate_s32(fp.rounding_shift_right(acc, self.pre_shift))
        return fp.requantize(acc, self.multiplier, self.shift)

    def apply(self, xs: list[np.ndarray], tables: dict) -> np.ndarray:
        """int16 query, value[, key] (N, T, features) -> int16 (N, T, value features)."""
        z = self.logits(xs, tables)
        v = np.asarray(xs[1], np.int64)
        steps = z.shape[-1]
        weights = np.zeros_like(z)
        for i in range(steps):
            last = i + 1 if self.causal else steps
            weights[:, i, :last] = fp.softmax_q15(z[:, i, :last])
        y = np.einsum("nij,nje->nie", weights, v)
        return fp.saturate_s16(fp.rounding_shift_right(y, 15))

    def window_masked(self, xs: list[np.ndarray], mask: np.ndarray, tables: dict) -> np.ndarray:
        """``apply`` under a mask (N, T), as the C: the padded keys left out of the softmax,
        the padded queries' rows 0."""
        z = self.logits(xs, tables)
        pad = np.asarray(mask, bool)
        steps = z.shape[-1]
        allowed = np.broadcast_to(~pad[:, None, :], z.shape)
        if self.causal:
            allowed = allowed & ~np.triu(np.ones((steps, steps), bool), k=1)
        weights = fp.softmax_q15_over(z, allowed)
        y = np.einsum("nij,nje->nie", weights, np.asarray(xs[1], np.int64))
        y = fp.saturate_s16(fp.rounding_shift_right(y, 15))
        return np.where(pad[..., None], 0, y)

    def uses(self) -> set[str]:
        return {"exp", "table_tanh"} if self.additive else {"exp"}

    def tables_needed(self) -> set[str]:
        return {"tanh"} if self.additive else set()

    def shared_scratch(self) -> list[dict[str, Any]]:
        return [{"type": "int32_t", "name": "attention_z", "size": self.max_timesteps,
                 "comment": "Attention: one query timestep's logits, then weights"}]  # fmt: skip

    def context(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "name": self.name,
            "input_sizes": list(self.input_sizes),
            "features": self.input_sizes[0],
            "value_features": self.input_sizes[1],
            "keyed": len(self.input_sizes) == 3,
            "causal": self.causal,
            "q_mult": ", ".join(str(int(v)) for v in self.q_mult),
            "k_mult": ", ".join(str(int(v)) for v in self.k_mult),
            "pre_shift": self.pre_shift,
            "multiplier": self.multiplier,
            "shift": self.shift,
            "title": self.title,
            "additive": self.additive,
            "tanh_multiplier": self.tanh_multiplier,
            "tanh_shift": self.tanh_shift,
            "score_weights": ", ".join(str(int(v)) for v in self.score_weights_q)
            if self.additive
            else "",
        }

    def format(self) -> str:
        scores = "tanh Q0.15 times int16 weights, " if self.additive else ""
        return f"{scores}logits Z{fp.Z_FRAC_BITS}, weights Q0.15, out the value's scale"

    def flash_bytes(self) -> dict[str, int]:
        weights = 4 * (len(self.q_mult) + len(self.k_mult))
        weights += 2 * len(self.q_mult) if self.additive else 0
        return {"weights": weights, "bias": 0, "requant": 0}
