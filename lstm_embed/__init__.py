"""lstm-embed: Keras LSTM models -> fixed-point C99 for Cortex-M.

Pipeline: frontend (Keras -> IR) -> quantize (IR + calibration -> integer IR) -> reference
(numpy integer oracle) -> emit (Jinja2 templates -> C) -> firmware (Cortex-M builds, QEMU).
"""

from lstm_embed.version import __version__


def convert(model, calibration, out_dir, name=None, options=None, force=False):
    """Keras model (in memory or a .keras/.h5 path) + calibration (N, T, m) -> C in out_dir.

    See ``lstm_embed.pipeline.convert``.
    """
    from lstm_embed.pipeline import convert as _convert

    return _convert(model, calibration, out_dir, name=name, options=options, force=force)


def load(out_dir, kernel="auto"):
    """The converted model in out_dir, compiled for the host: ``.predict(x)``, ``.step(x_t)``,
    ``.reset()``, ``.info``. See ``lstm_embed.targets.runtime.load``.
    """
    from lstm_embed.targets.runtime import load as _load

    return _load(out_dir, kernel=kernel)


__all__ = ["__version__", "convert", "load"]
