"""Run-only models (a layer needs the whole window): how run() goes over the window, the plan
templates/model_window.c.j2 renders.

Layers run one after another over the window, each writing its outputs into one of the state's
two window buffers (seq_q0, seq_q1), except around a layer that can make its outputs one output
step at a time (``valid_span``: Conv1D, Conv2D or a pooling of valid geometry along time). It
runs on the sub-window each output step reads, and
- a fused pair (``fused_pairs``): two such layers in a row; the first runs on the sub-window of
  inputs the second's output step reads, into state->fused_q, so its output is never stored;
- a frame run (``frame_runs``): the layers after such a layer (or pair) that take one timestep
  at a time (Dense, activations, a pooling along frequency only, a Reshape that regroups
  nothing, recurrent layers reading forwards) run on each output step as it is made, through
  state->frame_q, so only the last of them writes a window buffer (a recurrent layer returning
  its last output: none, it is copied out once the loop ends).
The integer results are the reference's: every layer sees the same inputs in the same order.
"""

from __future__ import annotations

from typing import Any

from lstm_embed.ir.model import sequence_out, timesteps_after
from lstm_embed.quantize.qir import QModel

FRAME_SCRATCH = "state->frame_q"


def fused_pairs(model: QModel) -> list[int]:
    """The layers i that run as layer i + 1 needs their outputs: both have ``valid_span``; for
    each output step of layer i + 1, run() runs layer i on the sub-window of inputs it reads,
    into state->fused_q (span_{i+1} of layer i's output steps), then layer i + 1 on those."""
    fused: list[int] = []
    layers = model.layers
    for index in range(len(layers) - 1):
        if fused and fused[-1] == index - 1:
            continue  # layer i is already the second of a pair
        if layers[index].valid_span and layers[index + 1].valid_span:
            fused.append(index)
    return fused


def _steps_one_frame(layer: Any) -> bool:
    """Whether ``layer`` can take a sequence one timestep at a time, in order."""
    if layer.frame_identity:
        return True
    return layer.window is None and not layer.go_backwards and not layer.computes_mask


def frame_runs(model: QModel) -> dict[int, list[int]]:
    """Head -> the layers run on each of its output steps (never empty). A head is a layer
    with ``valid_span`` that is not the first of a fused pair (a lone one, or the second); the
    run ends at the first layer that needs the whole window, after a recurrent layer that
    returns one vector, and never on a Reshape that only passes the frame on."""
    runs: dict[int, list[int]] = {}
    fused = fused_pairs(model)
    layers = model.layers
    for head, layer in enumerate(layers):
        if not layer.valid_span or head in fused:
            continue
        tail: list[int] = []
        for index in range(head + 1, len(layers)):
            if not _steps_one_frame(layers[index]):
                break
            tail.append(index)
            if layers[index].recurrent and not layers[index].return_sequences:
                break
        while tail and layers[tail[-1]].frame_identity:
            tail.pop()
        if tail:
            runs[head] = tail
    return runs


def _internal(model: QModel) -> set[int]:
    """Layers whose outputs no window buffer holds (the fused_q or frame_q scratch does)."""
    inside = set(fused_pairs(model))
    for head, tail in frame_runs(model).items():
        inside |= {head, *tail[:-1]}
    return inside


def fused_scratch(model: QModel) -> int:
    """int16 values of state->fused_q: the largest span of outputs a fused layer hands on."""
    sizes = [
        model.layers[i + 1].valid_span[0] * model.layers[i].output_size  # type: ignore[index]
        for i in fused_pairs(model)
    ]
    return max(sizes, default=0)


def frame_scratch(model: QModel) -> int:
    """int16 values of each of state->frame_q's two rows: the widest output step a frame run
    hands from one layer to the next (recurrent layers keep theirs in their state)."""
    layers = model.layers
    widths = [
        layers[i].output_size
        for head, tail in frame_runs(model).items()
        for i in (head, *tail[:-1])
        if not layers[i].recurrent
    ]
    return max(widths, default=0)


def window_wiring(model: QModel) -> list[dict[str, Any]]:
    """What each layer reads and writes over the window (layer by layer).

    Layer 0 reads the model input (which run_f32 quantizes into state->seq_q1) and writes
    state->seq_q0; every later layer writes the window buffer its input is not in, the last
    one y_q; ``sequence_in``: its input has a timestep axis. Layers that step (``per_step``)
    are called once per timestep with ``src`` pointing at the timestep they read (from the last
    one first when ``go_backwards``); a recurrent one leaves its output in its state (``dst``),
    copied to ``out`` + slot; a whole-window layer (Bidirectional) is called once on the
    buffers. The layers inside a fused pair or a frame run (``_internal``) write no window
    buffer; their calls are made by ``frame_run_call``.
    """
    wiring = []
    last = len(model.layers) - 1
    src, width, sequence = "x_q", model.input_size, True
    inside = _internal(model)
    fused = fused_pairs(model)
    buffer_in = 1  # the window buffer holding the input (run_f32's), or the one not written
    for index, layer in enumerate(model.layers):
        if index in inside:
            out = FRAME_SCRATCH
        else:
            out = "y_q" if index == last else f"state->seq_q{1 - buffer_in}"
            buffer_in = 1 - buffer_in
        size = layer.output_size
        keeps = sequence_out(layer, sequence)  # pooling, Flatten drop it; RepeatVector makes it
        backwards = bool(layer.go_backwards)
        per_step = not (sequence and layer.window is not None)  # else its own window function
        item: dict[str, Any] = {
            "in": src,
            "out": out,
            "in_width": width,
            "out_width": size,
            "sequence_in": sequence,
            "sequence_out": keeps,
            "per_step": per_step,
            "recurrent": layer.recurrent,
            "backwards": backwards,
            "tmp": "state->scratch_q[0]",
        }
        at = "(timesteps - 1 - t)" if backwards else "t"
        if not per_step:
            item |= {"src": src, "dst": out}
        elif layer.recurrent:
            output = layer.state_fields()[0]["name"]  # every recurrent kind's output state
            item |= {"src": f"{src} + {at} * {width}", "dst": f"state->{output}_{index}"}
        elif sequence:
            item |= {"src": f"{src} + t * {width}", "dst": f"{out} + t * {size}"}
        else:
            item |= {"src": src, "dst": out}
        item["buffer"] = None if index in inside else buffer_in  # the last one's: run_f32 reads it
        if index - 1 in fused:  # the pair reads the first layer's input
            item |= {"in": wiring[-1]["in"], "src": wiring[-1]["src"]}
        wiring.append(item)
        src, width, sequence = out, size, keeps
    return wiring


def _slot(item: dict[str, Any]) -> str:
    """Where a layer writes output step ``frame`` of its window buffer."""
    return f"{item['out']} + frame * {item['out_width']}"


def _lead(window: list[dict[str, Any]], model: QModel, head: int, dst: str) -> dict[str, Any]:
    """The head's calls for output step ``frame``, writing it to ``dst``: a lone head on the
    sub-window it reads; the second of a fused pair after the first, which runs on the
    sub-window of inputs the second's step reads, into state->fused_q."""
    item = window[head]
    span, stride = model.layers[head].valid_span  # type: ignore[misc]
    if head - 1 not in fused_pairs(model):
        src = f"{item['in']} + frame * {stride * item['in_width']}"
        return {"stages": [(span, stride)], "inputs": span,
                "calls": [{**item, "src": src, "dst": dst}]}  # fmt: skip
    first = window[head - 1]
    span1, stride1 = model.layers[head - 1].valid_span  # type: ignore[misc]
    src = f"{first['in']} + frame * {stride * stride1 * first['in_width']}"
    return {
        "stages": [(span1, stride1), (span, stride)],
        "inputs": (span - 1) * stride1 + span1,  # the first layer's sub-window, in its inputs
        "calls": [{**first, "src": src, "dst": "state->fused_q"},
                  {**item, "src": "state->fused_q", "dst": dst}],
    }  # fmt: skip


def frame_run_call(window: list[dict[str, Any]], model: QModel, head: int,
                   tail: list[int]) -> dict[str, Any]:  # fmt: skip
    """The calls of a frame run for one output step ``frame`` of its head: the head (or its
    fused pair) into frame_q[0], then each layer of the tail on the previous one's output
    step, the last into its window buffer at slot ``frame`` (a recurrent layer that returns
    one vector: copied there once, ``after``). A fused pair with no tail writes its own slot."""
    layers = model.layers
    current = f"{FRAME_SCRATCH}[0]" if tail else _slot(window[head])
    lead = _lead(window, model, head, current)
    calls, copies, row = lead["calls"], [], 0
    for index in tail:
        item, layer = window[index], layers[index]
        if layer.frame_identity:
            continue  # the same values: the next layer reads them where they are
        final = index == tail[-1]
        if layer.recurrent:
            dst = item["dst"]  # its output state
            if final and item["sequence_out"]:
                copies.append({"src": dst, "dst": _slot(item), "count": item["out_width"]})
        elif final:
            dst = _slot(item)
        else:
            row = 1 - row if current.startswith(FRAME_SCRATCH) else 0
            dst = f"{FRAME_SCRATCH}[{row}]"
        calls.append({**item, "src": current, "dst": dst})
        current = dst
    last = window[tail[-1]] if tail else window[head]
    after = None
    if tail and layers[tail[-1]].recurrent and not last["sequence_out"]:
        after = {"src": last["dst"], "dst": last["out"], "count": last["out_width"]}
    first_index = head - 1 if head - 1 in fused_pairs(model) else head
    return {**lead, "calls": calls, "copies": copies, "after": after,
            "first_index": first_index, "last_index": tail[-1] if tail else head}  # fmt: skip


def window_buffers(model: QModel) -> tuple[int, int]:
    """int16 values of a run-only model's two window buffers, each sized for what is written
    to it (not the model's timesteps times its widest layer, twice): the outputs of the layers
    that write it (``window_wiring``; the last layer's too: run_f32 reads them there; none of
    the layers inside a fused pair or frame run), buffer 1 also run_f32's quantized input."""
    steps = model.timesteps or 1
    sizes = [1, steps * model.input_size]
    counts = timesteps_after(model.layers, steps)
    wiring = window_wiring(model)
    for layer, count, item in zip(model.layers, counts, wiring, strict=True):
        if item["buffer"] is not None:
            sizes[item["buffer"]] = max(sizes[item["buffer"]], (count or 1) * layer.output_size)
    return sizes[0], sizes[1]


def run_only_scratch_bytes(model: QModel) -> int:
    """Bytes of the state a run-only model adds: window buffers, fused_q and frame_q."""
    return 2 * (sum(window_buffers(model)) + fused_scratch(model) + 2 * frame_scratch(model))


def window_context(model: QModel, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The run-only part of the model's template context: the layers merged with their
    wiring, the calls of each fused pair and frame run, and the buffers' sizes."""
    window = [
        {**layer, **wiring} for layer, wiring in zip(layers, window_wiring(model), strict=True)
    ]
    # every head: the second of each fused pair (alone unless a run follows), each run's
    runs = {index + 1: [] for index in fused_pairs(model)} | frame_runs(model)
    for item in window:
        item |= {"in_run": False, "frame_run": None}
    for index in fused_pairs(model):
        window[index]["in_run"] = True
    for head, tail in runs.items():
        window[head]["frame_run"] = frame_run_call(window, model, head, tail)
        for index in tail:
            window[index]["in_run"] = True
    plain = [la for la in window if not (la["in_run"] or la["frame_run"])]
    return {
        "window_layers": window,
        # Flatten and Reshape regroup exactly the model's timesteps: run() takes no other length
        "exact_timesteps": any(la.exact_timesteps for la in model.layers),
        "window_loops": any(la["per_step"] and la["sequence_in"] for la in plain),
        "window_copies": any(la["per_step"] and la["recurrent"] for la in plain)
        or any(
            la["frame_run"]["copies"] or la["frame_run"]["after"]
            for la in window
            if la["frame_run"]
        ),
        "last_layer_buffer": f"state->seq_q{window[-1]['buffer']}",
        "window_buffers": window_buffers(model),
        "fused_scratch": fused_scratch(model),
        "frame_scratch": frame_scratch(model),
    }
