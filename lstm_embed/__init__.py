"""lstm-embed: Keras LSTM models -> fixed-point C99 for Cortex-M.

Pipeline: frontend (Keras -> IR) -> quantize (IR + calibration -> integer IR) -> reference
(numpy integer oracle) -> emit (Jinja2 templates -> C) -> firmware (Cortex-M builds, QEMU).
"""

from lstm_embed.version import __version__


def convert(
    model, calibration, out_dir="out", name=None, options=None, force=False, example_input=None
):
    """Keras model (in memory or a .keras/.h5 path), .onnx path, or torch module (with
    ``example_input``, exported through torch.onnx) + calibration (N, T, m) -> C in out_dir.

    See ``lstm_embed.pipeline.convert``.
    """
    import os

    from lstm_embed.pipeline import convert as _convert

    if isinstance(model, str | os.PathLike):
        from lstm_embed.graph_cli import graph_of

        graph = graph_of(str(model))
        if graph is not None:  # a Functional model that is not one chain: docs/graphs.md
            from lstm_embed.graph_pipeline import convert_graph

            return convert_graph(graph, calibration, out_dir, name, options, force)
    return _convert(
        model, calibration, out_dir, name=name, options=options, force=force,
        example_input=example_input,
    )  # fmt: skip


def load(out_dir, kernel="auto"):
    """The converted model in out_dir, compiled for the host: ``.predict(x)``, ``.step(x_t)``,
    ``.reset()``, ``.info``. See ``lstm_embed.targets.runtime.load``.
    """
    from lstm_embed.graph_cli import is_graph_folder
    from lstm_embed.targets.runtime import load as _load

    if is_graph_folder(out_dir):  # predict takes a dict by input name or a list
        from lstm_embed.targets.graph_host import GraphModel

        return GraphModel(out_dir)
    return _load(out_dir, kernel=kernel)


__all__ = ["__version__", "convert", "load"]
