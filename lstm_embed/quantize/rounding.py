"""Weight rounding chosen against calibration data: error feedback and bias correction.

Pure numpy, no layer kinds. A layer kind hands over its float weight rows in the domain of the
C's dot product: row r multiplies one vector u of the layer's inputs, u being the int16 values
the C multiplies times their real value (input fold and input shift applied), so that the row's
contribution to the real pre-activation is ``rows[r] @ u``. With the per-row scales the C uses
and the moments of u on calibration data it gets integer rows back, and the bias change that
cancels the mean error (``rounded_weights``, the kinds' entry point).

Error feedback (the OBQ / GPTQ scheme): the columns of all rows are rounded one at a time, and
each column's rounding error is spread over the columns not yet rounded so that the remaining
ones can cancel it, weighted by the inverse of H, the second-moment matrix of u: the update
minimizes the expected squared error of the row's sum over the inputs seen. Columns go in
order of decreasing H diagonal, the inputs with the most power first, while many columns are
left to absorb their error.

Compensation: u is what the layer sees on the device, its predecessors quantized. Given the
float model's inputs v in the same domain as well, the rows are first moved to the least-squares
fit of the float pre-activations rows @ v from u (ridge towards the float rows), so that the
layer cancels the part of its predecessors' error that is linear in u, before rounding. The bias
then takes the mean of what is left: mean(rows @ v) - mean(rounded rows @ u).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lstm_embed.quantize import fixedpoint as fp

NEAREST, ERROR_FEEDBACK, AUTO = "nearest", "gptq", "auto"
METHODS = (NEAREST, ERROR_FEEDBACK)  # what a layer is rounded with
OPTIONS = (*METHODS, AUTO)  # what --rounding accepts (auto: the better on held-out data)

# Added to H's diagonal as a fraction of its mean diagonal: keeps H invertible when inputs are
# collinear or constant on the calibration data, and pulls the update towards plain rounding
# where the data says little (GPTQ's choice, 1%).
DAMPING = 0.01


@dataclass(frozen=True)
class InputStats:
    """Moments of the input vectors u that a layer's rows multiply, on calibration data, and
    optionally of the float model's inputs v in the same domain (for compensation)."""

    mean: np.ndarray  # (d,) E[u]
    second_moment: np.ndarray  # (d, d) E[u u^T]
    count: int  # vectors measured
    reference_mean: np.ndarray | None = None  # (d,) E[v]
    cross_moment: np.ndarray | None = None  # (d, d) E[v u^T]

    @classmethod
    def of(cls, u: np.ndarray, reference: np.ndarray | None = None, chunk: int = 1 << 15):
        """u (..., d): every vector the rows multiply (e.g. every sequence and timestep);
        ``reference``: the float model's vectors v at the same places, or None."""
        u = np.asarray(u, np.float64)
        u = u.reshape(-1, u.shape[-1])
        if len(u) == 0:
            raise ValueError("no input vectors to measure")
        v = None if reference is None else np.asarray(reference, np.float64).reshape(u.shape)
        d = u.shape[1]
        second, cross = np.zeros((d, d)), np.zeros((d, d))
        for start in range(0, len(u), chunk):  # bounded memory for long calibration sets
            part = u[start : start + chunk]
            second += part.T @ part
            if v is not None:
                cross += v[start : start + chunk].T @ part
        n = len(u)
        if v is None:
            return cls(u.mean(axis=0), second / n, n)
        return cls(u.mean(axis=0), second / n, n, v.mean(axis=0), cross / n)

    def columns(self, part: slice) -> InputStats:
        """The moments of part of u (for rows that multiply only those columns)."""
        both = (part, part)
        if self.cross_moment is None:
            return InputStats(self.mean[part], self.second_moment[both], self.count)
        return InputStats(
            self.mean[part],
            self.second_moment[both],
            self.count,
            self.reference_mean[part],
            self.cross_moment[both],
        )


def feedback_hessian(stats: InputStats, correct_bias: bool) -> np.ndarray:
    """What error feedback weighs the rounding errors with: with a bias that takes the mean
    error, what is left of a row's error e on a vector u is e (u - E[u]), so the covariance of
    u; without one, the second moment E[u u^T].

    The second moment with a bias to correct would be wrong where it matters most: an input
    with a large offset (gravity on an accelerometer axis, a temperature in degrees, a pressure
    in hPa) makes E[u]E[u]^T dominate it, so the feedback spends the free columns on cancelling
    the offset's error, which the bias cancels anyway, and leaves larger errors in the
    variations that carry the signal; on calibration data the cancellation holds, on a new
    sequence whose other inputs differ from their calibration means it does not."""
    if correct_bias:
        return stats.second_moment - np.outer(stats.mean, stats.mean)
    return stats.second_moment


def nearest(rows: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    """Each weight to its nearest step (ties away from zero), saturated: plain rounding."""
    top = fp.weight_max(bits)
    return fp.saturate(fp.round_half_away(rows / scale[..., None]), -top, top)


def error_feedback(
    rows: np.ndarray,
    scale: np.ndarray,
    bits: int,
    hessian: np.ndarray,
    damping: float = DAMPING,
) -> np.ndarray:
    """Integer rows (..., d) rounded column by column with error feedback through ``hessian``.

    With R = H^-1 restricted to the columns not yet rounded, rounding column j moves the row's
    sum by e_j = w_j - q_j (in steps); the other free columns w_F change by e_j * R_Fj / R_jj,
    the least-squares correction under H. The upper Cholesky factor U of H^-1 (H^-1 = U^T U)
    carries those restricted inverses in its rows: R_Fj / R_jj = U_jF / U_jj for F after j.
    """
    rows = np.asarray(rows, np.float64)
    shape = rows.shape
    d = shape[-1]
    h = np.array(hessian, np.float64)
    if h.shape != (d, d):
        raise ValueError(f"hessian shape {h.shape} does not match rows of {d} columns")
    diagonal = np.diag(h).copy()
    mean_power = float(np.mean(diagonal))
    if not mean_power > 0:  # no input ever nonzero: the data cannot tell roundings apart
        return nearest(rows, scale, bits)
    h[np.diag_indices(d)] += damping * mean_power
    order = np.argsort(-diagonal, kind="stable")
    h = h[np.ix_(order, order)]
    upper = np.linalg.cholesky(np.linalg.inv(h)).T
    top = fp.weight_max(bits)
    w = (rows.reshape(-1, d) / np.reshape(scale, (-1, 1)))[:, order]
    q = np.empty_like(w)
    for j in range(d):
        q[:, j] = np.clip(fp.round_half_away(w[:, j]), -top, top)
        error = (w[:, j] - q[:, j]) / upper[j, j]
        w[:, j + 1 :] -= np.outer(error, upper[j, j + 1 :])
    result = np.empty_like(q)
    result[:, order] = q
    return result.astype(np.int64).reshape(shape)


def compensated(
    rows: np.ndarray, stats: InputStats, with_bias: bool, damping: float = DAMPING
) -> np.ndarray:
    """Rows w' (..., d) minimizing E|w v - w' u|^2 + lambda |w' - w|^2 (u centred, and the bias
    takes the means, when ``with_bias``): w' = (w X + lambda w)(C + lambda I)^-1, X = E[v u^T],
    C = E[u u^T], lambda = ``damping`` times C's mean diagonal."""
    c, x = stats.second_moment, stats.cross_moment
    if with_bias:
        c = c - np.outer(stats.mean, stats.mean)
        x = x - np.outer(stats.reference_mean, stats.mean)
    ridge = damping * float(np.mean(np.diag(c)))
    if not ridge > 0:
        return rows
    d = c.shape[0]
    # solve (C + lambda I) w'^T = (w X + lambda w)^T, C symmetric
    rhs = np.reshape(rows, (-1, d)) @ x + ridge * np.reshape(rows, (-1, d))
    return np.linalg.solve(c + ridge * np.eye(d), rhs.T).T.reshape(np.shape(rows))


def mean_error(rows: np.ndarray, q: np.ndarray, scale: np.ndarray, stats: InputStats):
    """Per row, mean(rows @ v) - mean(q * scale @ u): what the bias must add (v = u without a
    reference)."""
    reference = stats.mean if stats.reference_mean is None else stats.reference_mean
    return rows @ reference - (q * scale[..., None]) @ stats.mean


@dataclass(frozen=True)
class Rounded:
    weights: np.ndarray  # int64, the shape of the float rows
    bias_change: np.ndarray  # real value added to each row's bias (zeros: none)


def round_rows(
    rows: np.ndarray,
    scale: np.ndarray,
    bits: int,
    method: str = NEAREST,
    stats: InputStats | None = None,
    correct_bias: bool = True,
) -> Rounded:
    """Float rows (..., d) on the scales ``scale`` (...,) -> integer rows, rounded by ``method``.

    ``stats``: the moments of u (d,) on calibration data, and of the float model's v when
    compensating (needed unless ``method`` is nearest). ``correct_bias``: the layer has a bias
    that can take the mean error.
    """
    rows = np.asarray(rows, np.float64)
    scale = np.asarray(scale, np.float64)
    if method == NEAREST:
        return Rounded(nearest(rows, scale, bits), np.zeros(rows.shape[:-1]))
    if method != ERROR_FEEDBACK:
        raise ValueError(f"rounding {method!r} is not one of {', '.join(METHODS)}")
    if stats is None:
        raise ValueError("error-feedback rounding needs the statistics of the layer's inputs")
    target = rows if stats.cross_moment is None else compensated(rows, stats, correct_bias)
    hessian = feedback_hessian(stats, correct_bias)
    q = error_feedback(target, scale, bits, hessian)
    if not correct_bias:
        return Rounded(q, np.zeros(rows.shape[:-1]))
    return Rounded(q, mean_error(rows, q, scale, stats))


def rounded_weights(
    rows: np.ndarray,
    bias: np.ndarray,
    scale: np.ndarray,
    activation_scale: float,
    bits: int,
    method: str,
    stats: InputStats | None,
    correct_bias: bool = True,
    row_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The integer weights and int32 biases of rows whose scales are already chosen (those of
    ``fixedpoint.row_scales``): the entry point of the layer kinds.

    ``rows`` (..., d) multiply int values worth ``activation_scale`` each (``stats`` describes
    their real values u), ``bias`` (...) in the same real units, ``scale`` (...) per row. The
    bias takes the change of ``round_rows``, saturated to the accumulator headroom of
    ``row_length`` (default d) columns. Nearest rounding gives exactly ``fixedpoint.row_scales``'
    weights and biases.
    """
    row_length = row_length or np.shape(rows)[-1]
    rounded = round_rows(rows, scale, bits, method, stats, correct_bias)
    # the bias is in accumulator units: 2**s weight x activation LSBs for int8 rows summed in
    # blocks (fixedpoint.accumulator_shift), as for int16 rows
    unit = np.asarray(scale, np.float64) * fp.accumulator_unit(bits, row_length) * activation_scale
    bias_q = fp.round_half_away((np.asarray(bias, np.float64) + rounded.bias_change) / unit)
    headroom = fp.accumulator_headroom(row_length, bits)
    dtype = np.int8 if bits == 8 else np.int16
    return rounded.weights.astype(dtype), fp.saturate(bias_q, -headroom, headroom).astype(np.int32)
