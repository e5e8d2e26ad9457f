"""What every layer kind provides, and the small types the kinds share.

A layer kind is one module in this package holding the float IR layer with its forward pass,
its quantization, and the quantized layer with its integer reference and its emitter context,
beside its templates in ``templates/kinds/<kind>/``; no file format (each file format's reader
builds its float layer: docs/architecture.md).
The generic stages (float_model, quantize, reference, emit, report) only loop over the chain and
call the methods declared here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

Q15_SCALE = 2.0**-15


class IRError(ValueError):
    """A model that the IR cannot represent; the message names the layer and the problem."""


class QuantizeError(ValueError):
    """Calibration data or an option that cannot be used; the message says which and why."""


class Diverges(QuantizeError):
    """A layer whose float outputs on the calibration data leave float32's range: Keras
    computes inf or NaN there, so there is nothing to quantize against."""


class Unsupported(ValueError):
    """A layer, or an option of it, that lstm-embed cannot convert; ``reasons`` say which."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


def check_finite(layer: str, what: str, array: np.ndarray) -> None:
    if not np.all(np.isfinite(array)):
        raise IRError(
            f"layer '{layer}': {what} contains NaN or Inf; only finite weights are supported"
        )


def check_shape(layer: str, what: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if tuple(array.shape) != expected:
        raise IRError(f"layer '{layer}': {what} shape {tuple(array.shape)} != {expected}")


@dataclass
class LayerTrace:
    """Per-layer float tensors seen during a forward pass (for calibration and reports).

    ``output`` is everything the layer computes (every timestep for a recurrent layer), which
    the next layer receives after ``FloatLayer.chain_output``.
    """

    output: np.ndarray
    cell: np.ndarray | None = None  # (N, T, n) for LSTM layers
    gate_preactivations: dict[str, np.ndarray] = field(default_factory=dict)


class FloatLayer:
    """Interface of a float IR layer (frozen dataclasses in the kind modules)."""

    kind: ClassVar[str]
    type_name: ClassVar[str]  # as reports and messages name the layer type ("LSTM")
    recurrent: ClassVar[bool] = False  # holds state from one timestep to the next
    streaming: ClassVar[bool] = True  # can run one timestep at a time (step())
    arity: ClassVar[int | None] = 1  # inputs the layer takes (None: any number, a merge)
    # Keras return_state=True: the final states a recurrent kind can return besides its output
    state_names: ClassVar[tuple[str, ...]] = ()
    # -- capabilities: what the generic stages ask of every layer (they never probe for names);
    #    a kind overrides those that apply to it, as a class value, a field or a property --
    go_backwards: ClassVar[bool] = False  # reads the window from its last timestep
    stateful: ClassVar[bool] = False  # Keras stateful=True: the state carries over run() calls
    per_step_state: ClassVar[bool] = False  # not recurrent, yet keeps state per step (causal conv)
    makes_timesteps: ClassVar[bool] = False  # makes a sequence of a vector (RepeatVector)
    needs_vector: ClassVar[bool] = False  # its input must be one vector per sequence
    exact_timesteps: ClassVar[bool] = False  # runs on exactly the model's timesteps (Reshape)
    computes_mask: ClassVar[bool] = False  # Masking: decides which timesteps are padding
    takes_ids: ClassVar[bool] = False  # its input is integer ids (Embedding): input scale 1
    whole_window_reason: ClassVar[str] = ""  # why it needs the whole window (not streaming)
    joins_timesteps: ClassVar[bool] = False  # Concatenate(axis=1): output timesteps the sum
    reads_mask: ClassVar[bool] = False  # reads a mask itself (GlobalAveragePooling1D, Attention)
    # a method (timesteps in -> timesteps out, None: any) for a layer that changes them
    output_timesteps: ClassVar[Callable[[int | None], int | None] | None] = None
    # a method returning the inner layers traced on their own (Bidirectional's directions)
    sublayers: ClassVar[Callable[[], tuple] | None] = None
    # (rows, channels) of each timestep's output when it is a 2D frame (Conv2D, pooling 2D:
    # the chain carries it flattened row-major); None: a vector of features
    output_frame: ClassVar[tuple[int, int] | None] = None
    # acts on each feature alone (an activation, BatchNormalization): on (T, F, C) frames its
    # output keeps the input's frame
    keeps_frame: ClassVar[bool] = False
    name: str
    input_size: int

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def shared_input_scale(self, scale: np.ndarray) -> np.ndarray:
        """The model input's per-feature scales as this layer, the first, can take them (a
        kernel shared over a frame's positions needs one scale per channel)."""
        return scale

    def forward_inputs(self, xs: list[np.ndarray]) -> LayerTrace:
        """The forward pass on every input (a graph node's); one input: ``forward``."""
        return self.forward(xs[0])

    def final_state(self, trace: LayerTrace) -> tuple[np.ndarray, ...]:
        """The states of ``state_names`` after the last timestep, (N, units) each."""
        raise NotImplementedError

    @property
    def params(self) -> int:
        raise NotImplementedError

    @property
    def keeps_timesteps(self) -> bool:
        """False for a layer that turns a sequence into one vector (return_sequences=False)."""
        return True

    def forward(self, x: np.ndarray) -> LayerTrace:
        raise NotImplementedError

    def chain_output(self, trace: LayerTrace) -> np.ndarray:
        return trace.output

    def quantize(self, ctx: QuantContext) -> Any:
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """inspect columns: type, activation, units, params formula."""
        raise NotImplementedError

    def flash_bytes(self, bits: int) -> int:
        raise NotImplementedError

    def dequantized(self, qlayer: Any, feature_scale: np.ndarray) -> FloatLayer:
        """This layer with the rounded weights of ``qlayer`` (the weight-rounding error alone)."""
        raise NotImplementedError


@dataclass(frozen=True)
class QuantContext:
    """What quantizing one layer may use: the real value of one LSB of each input feature,
    the layer's float inputs and trace on the calibration data, the weight width and options.

    ``rounding``: how to round the weights (``rounding.METHODS``; the quantizer resolves
    ``auto``). For any but nearest, ``quantized_input`` is the layer's input as the C computes
    it (integer values, real value ``* feature_scale``) on calibration data: the model input
    quantized, run through the already quantized layers before this one. A kind keeps the
    scales that the float ranges give and rounds its rows with ``rounding.rounded_weights``, on
    statistics measured over the sequences ``fit_part`` keeps (all, or the part that
    ``--rounding auto`` fits on; the ranges always come from every sequence)."""

    feature_scale: np.ndarray
    layer_input: np.ndarray
    trace: LayerTrace
    bits: int
    options: Any
    rounding: str = "nearest"
    quantized_input: np.ndarray | None = None
    fit: np.ndarray | None = None  # indices of the calibration sequences statistics use
    # a layer with several inputs (a merge in a graph): every input's feature scale
    input_scales: tuple[np.ndarray, ...] = ()

    def fit_part(self, per_sequence: np.ndarray) -> np.ndarray:
        """The sequences of ``per_sequence`` (first axis: calibration sequence) to fit on."""
        return per_sequence if self.fit is None else per_sequence[self.fit]


class QLayer:
    """Interface of a quantized layer: integer reference and emitter context."""

    kind: ClassVar[str]
    recurrent: ClassVar[bool] = False
    template: ClassVar[str]  # templates/kinds/<kind>/layer.c.j2
    streaming: ClassVar[bool] = True  # as FloatLayer.streaming
    arity: ClassVar[int | None] = 1  # as FloatLayer.arity
    state_names: ClassVar[tuple[str, ...]] = ()  # as FloatLayer.state_names
    # -- capabilities: what the generic stages ask of every layer (they never probe for names);
    #    a kind overrides those that apply to it, as a class value, a field or a property --
    go_backwards: ClassVar[bool] = False  # reads the window from its last timestep
    stateful: ClassVar[bool] = False  # Keras stateful=True: the state carries over run() calls
    per_step_state: ClassVar[bool] = False  # not recurrent, yet keeps state per step (causal conv)
    makes_timesteps: ClassVar[bool] = False  # makes a sequence of a vector (RepeatVector)
    needs_vector: ClassVar[bool] = False  # its input must be one vector per sequence
    exact_timesteps: ClassVar[bool] = False  # runs on exactly the model's timesteps (Reshape)
    computes_mask: ClassVar[bool] = False  # Masking: decides which timesteps are padding
    takes_ids: ClassVar[bool] = False  # its input is integer ids (Embedding): input scale 1
    whole_window_reason: ClassVar[str] = ""  # why it needs the whole window (not streaming)
    joins_timesteps: ClassVar[bool] = False  # Concatenate(axis=1): output timesteps the sum
    reads_mask: ClassVar[bool] = False  # reads a mask itself (GlobalAveragePooling1D, Attention)
    # a method (timesteps in -> timesteps out, None: any) for a layer that changes them
    output_timesteps: ClassVar[Callable[[int | None], int | None] | None] = None
    # a method returning the inner layers traced on their own (Bidirectional's directions)
    sublayers: ClassVar[Callable[[], tuple] | None] = None
    # a method running the whole window at once (whole-window kinds: Bidirectional, pooling)
    window: ClassVar[Callable[..., Any] | None] = None
    hard_sigmoid: ClassVar[bool] = False  # a recurrent activation of Keras' hard_sigmoid
    portable_only: ClassVar[bool] = False  # runs the reference kernel on every core
    # (span, stride) of a whole-window layer whose output step t reads input steps
    # [t * stride, t * stride + span) only (valid padding): run() can feed it a sub-window
    # (emit.window_plan runs such a layer as the next one's inputs are needed)
    valid_span: ClassVar[tuple[int, int] | None] = None
    # a window layer that hands each timestep's values on unchanged (a Reshape that regroups
    # nothing): a frame run (emit.window_plan) passes it without a call
    frame_identity: ClassVar[bool] = False

    @property
    def keeps_timesteps(self) -> bool:
        return True

    def kernel_stack_bytes(self) -> dict[str, int]:
        """Local arrays of a step by kernel, for kinds with optimized kernels ({} otherwise)."""
        return {}

    def kernel_flash_bytes(self) -> dict[str, int]:
        """Constants by kernel layout, for kinds with optimized kernels ({} otherwise)."""
        return {}

    name: str
    input_size: int

    def final_state(self, state: Any) -> tuple[np.ndarray, ...]:
        """The integer states of ``state_names`` held in ``state`` (after a window)."""
        raise NotImplementedError

    def state_scales(self) -> tuple[np.ndarray, ...]:
        """Real value of one LSB of each state of ``state_names``, per unit."""
        raise NotImplementedError

    def state_members(self) -> tuple[str, ...]:
        """The state struct fields (``state_fields`` names) holding ``state_names``."""
        raise NotImplementedError

    def state_problem(self, index: int) -> str | None:
        """Why the C cannot hand state ``index`` on as an int16 tensor (None: it can); said
        only when a graph reads or returns that state."""
        return None

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    @property
    def output_feature_scale(self) -> np.ndarray:
        """Real value of one LSB of each output feature (the next layer folds it in)."""
        raise NotImplementedError

    @property
    def macs(self) -> int:
        raise NotImplementedError

    @property
    def weight_bits(self) -> int:
        raise NotImplementedError

    def initial_state(self, batch: int) -> Any:
        return None

    def step(self, x_q: np.ndarray, state: Any, tables: dict) -> tuple[np.ndarray, Any]:
        """One timestep (or the one vector): int16 (N, input_size) -> (output, trace or None)."""
        raise NotImplementedError

    def apply(self, xs: list[np.ndarray], tables: dict) -> np.ndarray:
        """A layer of several inputs (``arity`` None: merges, attention) over whole windows:
        int16 operands (N, ..., size_i) -> int16 output."""
        raise NotImplementedError

    def window_masked(self, xs: list[np.ndarray], mask: np.ndarray, tables: dict) -> np.ndarray:
        """A kind that ``reads_mask`` (not recurrent) over whole windows under a mask (N, T)."""
        raise NotImplementedError

    def tables_needed(self) -> set[str]:
        return set()

    def uses(self) -> set[str]:
        """Flags that switch on shared C helpers in templates/ops.c.j2."""
        return set()

    def state_fields(self) -> list[dict[str, Any]]:
        """Members of the caller-owned state struct: {type, name, size, comment}."""
        return []

    def shared_scratch(self) -> list[dict[str, Any]]:
        """Scratch members shared by all layers (largest size wins): {type, name, size, comment}."""
        return []

    def scratch_width(self) -> int:
        """int16 values this layer needs in a ping-pong scratch buffer (0: none)."""
        return 0

    def context(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def format(self) -> str:
        raise NotImplementedError

    def flash_bytes(self) -> dict[str, int]:
        raise NotImplementedError

    @property
    def state_bytes(self) -> int:
        return 0
