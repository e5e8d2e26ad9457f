"""Export a converted model folder into the layout a firmware project consumes.

``export(OUT, "cmake" | "zephyr" | "arduino" | "platformio", DIR)`` copies every ``*.c`` and
``*.h`` of OUT (whatever files convert writes) into DIR/src/ with report.json, and renders the
build files from templates/export/<format>/. DIR is written to a temporary folder and moved
into place, like convert's output, and a folder lstm-embed did not write is refused unless
``force``.

The kernel choice (``auto``, ``reference``, ``plain``) becomes the generated C's
``NAME_USE_REFERENCE_KERNEL`` / ``NAME_USE_PLAIN_KERNEL`` macro: a CMake cache variable, a
Kconfig choice, a PlatformIO build flag. ``auto`` defines neither, and the C picks MVE, DSP or
plain C from the compiler's target macros (the reference kernel on a host). A folder converted
with ``--core`` (report.json "core") holds only that core's kernels (emit.CORE_KERNELS): the
export offers ``auto`` and the reference/plain kernels the file holds, and says what ``auto``
runs there (see kernel_options).
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.render import render
from lstm_embed.targets.boards import get_board
from lstm_embed.targets.graph_host import graph_report, is_graph_folder
from lstm_embed.targets.hostbuild import HostBuildError, read_report
from lstm_embed.targets.kernels import (
    KERNELS,
    KernelOptions,
    kernel_flags,
    kernel_options,
    model_files,
)
from lstm_embed.version import __version__

FORMATS = ("cmake", "zephyr", "arduino", "platformio")
# What each choice other than auto runs (the generated C's -DNAME_USE_<KERNEL>_KERNEL).
KERNEL_DESCRIPTIONS = {"reference": "portable", "plain": "optimized C without SIMD"}
DEFAULT_LIB_VERSION = "0.1.0"
# Cortex-M4F, the default board's core: the toolchain file's default CPU flags.
DEFAULT_CPU_FLAGS = " ".join(get_board("qemu-m4").cpu_flags)
KCONFIG_HELP_WIDTH = 68  # help lines, after their tab and two spaces
EXAMPLE_TIMESTEPS = 8  # the Arduino sketch's window when the model accepts any length
AUTHOR = "lstm-embed"
# Arduino requires a url; without --url it is a placeholder in the reserved .invalid domain.
PLACEHOLDER_URL = "https://example.invalid/"
# Semantic version: Arduino wants semver, PlatformIO semver of at most 20 characters, CMake's
# project(VERSION) digits and dots; MAJOR.MINOR.PATCH satisfies all three.
_VERSION = re.compile(r"(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\Z")


class ExportError(ValueError):
    """The export cannot be made; the message names the folder, file or option."""


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path  # the converted model folder that was exported
    dest: Path  # the written project folder
    format: str
    files: tuple[str, ...]  # every file written, relative to dest, sorted


@dataclass(frozen=True)
class _Model:
    """What the templates need from a converted folder."""

    out_dir: Path
    report: dict[str, Any]
    sources: tuple[str, ...]  # *.c file names
    headers: tuple[str, ...]  # *.h file names
    kernels: KernelOptions  # what the .c holds (report.json "core")

    @property
    def name(self) -> str:
        return self.report["name"]

    @property
    def graph(self) -> dict[str, Any] | None:
        """A graph's inputs and outputs (report.json "graph"); None for a chain."""
        return self.report.get("graph")


def _read_model(out_dir: Path) -> _Model:
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir}: no such folder; run `lstm-embed convert ... -o {out_dir}`")
    path = out_dir / "report.json"
    try:
        report = graph_report(out_dir) if is_graph_folder(out_dir) else read_report(out_dir)
        name = cformat.c_identifier(str(report["name"]))
    except HostBuildError as error:
        raise ExportError(str(error)) from error
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{path}: not a report written by convert ({error})") from error
    sources, headers = model_files(out_dir)
    if f"{name}.h" not in headers or not sources:
        raise ExportError(f"{out_dir}: {name}.h or the model's .c files are missing; reconvert")
    try:  # folders converted before --core hold every kernel
        kernels = kernel_options(str(report.get("core", "all")))
    except ValueError as error:
        raise ExportError(f"{path}: {error}; reconvert") from error
    return _Model(out_dir, report, sources, headers, kernels)


def _check_kernel(model: _Model, kernel: str) -> None:
    options = model.kernels
    if kernel not in options.offered:
        raise ExportError(
            f"--kernel {kernel!r}: {model.out_dir} was converted with --core {options.core},"
            f" which holds no {kernel} kernel (supported: {', '.join(options.offered)});"
            f" convert with --core all to choose it"
        )


def _one_line(text: object) -> str:
    """Text safe on one line of a properties file or a '#' comment."""
    return " ".join(str(text).split())


def _example_window(model: _Model, example_input: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The Arduino sketch's input: the first sequence of example_input, else zeros."""
    m, fixed = int(model.report["input_size"]), int(model.report["timesteps"])
    if example_input is None:
        steps = fixed or EXAMPLE_TIMESTEPS
        zeros = np.zeros((steps, m), dtype=np.float32)
        return zeros, "zeros; pass --input X.npy to export to compile in a real window"
    x = np.asarray(example_input)
    if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] != m:
        raise ExportError(f"example input shaped {x.shape}; expected (N, T, {m})")
    if x.dtype.kind not in "fiu" or not np.isfinite(x).all():
        raise ExportError("example input must hold finite float values")
    return x[0].astype(np.float32), "the first sequence given to `lstm-embed export --input`"


def _graph_context(model: _Model) -> dict[str, Any]:
    """A graph's inputs and outputs as NAME.h declares them, and a line describing them."""
    graph = model.graph
    assert graph is not None

    def described(items: list[dict], key: str) -> str:
        return ", ".join(
            f"{i[key]} ({'timesteps x ' if i['sequence'] else ''}{i['size']})" for i in items
        )

    text = (
        f"a graph: inputs {described(graph['inputs'], 'name')}; outputs"
        f" {described(graph['outputs'], 'tensor')}"
    )
    return {
        "graph": True,
        "graph_inputs": graph["inputs"],
        "graph_outputs": [{**y, "c": y["c_name"].removeprefix("y_")} for y in graph["outputs"]],
        "graph_text": text,
        "streaming": not model.report["run_only"],
        "timesteps": int(model.report["timesteps"]),
    }


def _context(
    model: _Model, dest: Path, kernel: str, lib_version: str, url: str | None
) -> dict[str, Any]:
    r = model.report
    name = model.name
    options = model.kernels
    if model.graph is not None:  # no single input or output size, no sizes before a build
        sizes = {"input_size": 0, "output_size": 0, "flash_bytes": 0, "ram_bytes": 0}
        extra = _graph_context(model)
    else:
        sizes = {
            "input_size": int(r["input_size"]),
            "output_size": int(r["output_size"]),
            "flash_bytes": int(r["flash_bytes"]["total"]),
            "ram_bytes": int(r["ram_bytes"]["total"]),
        }
        extra = {"graph": False}
    return {
        **sizes,
        **extra,
        "tool_version": __version__,
        "source": _one_line(r.get("source", "?")),
        "name": name,
        "NAME": name.upper(),
        "sources": model.sources,
        "headers": model.headers,
        "kernel": kernel,
        "core": options.core,
        "kernels": options.offered,
        "kernels_text": options.offered_text,
        "auto_kernel": options.auto,
        "kernel_summary": options.summary,
        "kernel_descriptions": KERNEL_DESCRIPTIONS,
        "lib_version": lib_version,
        "folder_hint": dest.name,
        "author": AUTHOR,
        "maintainer": AUTHOR,
        "url": _one_line(url) if url else PLACEHOLDER_URL,
        "url_is_placeholder": not url,
    }


def _library_slug(name: str) -> str:
    """PlatformIO library name: a-z, digits and single dashes, not at either end."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "lstm-model"


# Each renderer returns {path in dest: text}; the model's files are added by export().
ExampleInput = np.ndarray | dict[str, np.ndarray] | None  # a graph's: by input name
Renderer = Callable[[_Model, dict[str, Any], ExampleInput], dict[str, str]]


def _cmake(model: _Model, ctx: dict[str, Any], _x: ExampleInput) -> dict[str, str]:
    ctx = {**ctx, "cpu_flags": DEFAULT_CPU_FLAGS}
    return {
        "CMakeLists.txt": render("export/cmake/CMakeLists.txt.j2", **ctx),
        f"cmake/{model.name}Config.cmake": render("export/cmake/Config.cmake.j2", **ctx),
        "cmake/arm-none-eabi.cmake": render("export/cmake/arm-none-eabi.cmake.j2", **ctx),
    }


def _zephyr(model: _Model, ctx: dict[str, Any], _x: ExampleInput) -> dict[str, str]:
    options = model.kernels
    choice_help = "All kernels give the same outputs bit for bit; they differ in speed."
    if options.core != "all":
        choice_help += (
            f" Converted with --core {options.core}, the file offers {options.offered_text}"
            "; convert with --core all for every kernel."
        )
    ctx = {
        **ctx,
        "module_name": f"lstm_embed_{model.name}",
        "config": f"LSTM_EMBED_{ctx['NAME']}",
        "choice_help": textwrap.wrap(choice_help, KCONFIG_HELP_WIDTH),
        "auto_help": textwrap.wrap(options.summary, KCONFIG_HELP_WIDTH),
    }
    return {
        "zephyr/module.yml": render("export/zephyr/module.yml.j2", **ctx),
        "CMakeLists.txt": render("export/zephyr/CMakeLists.txt.j2", **ctx),
        "Kconfig": render("export/zephyr/Kconfig.j2", **ctx),
    }


def _arduino(model: _Model, ctx: dict[str, Any], x: ExampleInput) -> dict[str, str]:
    name = model.name
    # Arduino library names start with a letter or digit (C names may start with '_').
    library_name = name if name[0].isalnum() else f"lstm{name}"
    sketch = library_name  # examples/<name>/<name>.ino: a sketch's folder and file share a name
    ctx = {**ctx, "library_name": library_name, "sketch": sketch}
    if model.graph is not None:
        ctx |= _graph_example(model, x)
        example = "export/arduino/graph_example.ino.j2"
    else:
        window, description = _example_window(model, x)
        ctx |= {
            "timesteps": window.shape[0],
            "values": cformat.c_float_array(window),
            "input_description": description,
        }
        example = "export/arduino/example.ino.j2"
    return {
        "library.properties": render("export/arduino/library.properties.j2", **ctx),
        f"examples/{sketch}/{sketch}.ino": render(example, **ctx),
    }


def _graph_example(model: _Model, x: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """A graph's sketch input: sample 0 of every input of ``x`` (by input name), else zeros;
    a whole window of each sequence."""
    graph, steps = model.graph, int(model.report["timesteps"])
    assert graph is not None
    inputs = []
    for item in graph["inputs"]:
        shape = (steps, item["size"]) if item["sequence"] else (item["size"],)
        if x is None:
            value = np.zeros(shape, np.float32)
        else:
            if item["name"] not in x:
                raise ExportError(f"example input: no array {item['name']!r} (a .npz by name)")
            value = np.asarray(x[item["name"]])
            if value.shape[1:] != shape or len(value) < 1:
                raise ExportError(
                    f"example input {item['name']!r} shaped {value.shape}; expected (N, "
                    + ", ".join(map(str, shape))
                    + ")"
                )
            if value.dtype.kind not in "fiu" or not np.isfinite(value).all():
                raise ExportError("example input must hold finite float values")
            value = value[0].astype(np.float32)
        inputs.append({**item, "literal": cformat.c_float_array(value.reshape(-1))})
    description = (
        "zeros; pass --input X.npz (one array per input, by name) to export to compile in a"
        " real window"
        if x is None
        else "sample 0 of each input given to `lstm-embed export --input`"
    )
    return {"example_inputs": inputs, "input_description": description}


def _platformio(model: _Model, ctx: dict[str, Any], _x: ExampleInput) -> dict[str, str]:
    # library.json (PlatformIO docs, manifests/library-json/fields): name (max. 50; a-z, digits,
    # dashes), version (max. 20, semver) and description (max. 255) are required; the rest,
    # build.flags/srcDir/includeDir included, is optional.
    shape = (
        f"a graph of {len(ctx['graph_inputs'])} inputs and {len(ctx['graph_outputs'])} outputs"
        if ctx["graph"]
        else f"{ctx['input_size']} inputs, {ctx['output_size']} outputs"
    )
    description = (
        f"Fixed-point LSTM model {model.name} ({shape}), generated by lstm-embed"
        f" {__version__}: C99, int16 state, no malloc. Kernel: {model.kernels.brief}."
    )
    ctx = {
        **ctx,
        "library_name": _library_slug(model.name)[:50].strip("-"),
        "description": description[:255],
        "flags": kernel_flags(model.name, ctx["kernel"]),
    }
    return {"library.json": render("export/platformio/library.json.j2", **ctx)}


RENDERERS: dict[str, Renderer] = {
    "cmake": _cmake,
    "zephyr": _zephyr,
    "arduino": _arduino,
    "platformio": _platformio,
}


def _check_options(fmt: str, kernel: str, lib_version: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} not supported (supported: {', '.join(FORMATS)})")
    if kernel not in KERNELS:
        raise ExportError(f"--kernel {kernel!r} not supported (supported: {', '.join(KERNELS)})")
    if not _VERSION.match(lib_version):
        raise ExportError(f"--lib-version {lib_version!r}: expected MAJOR.MINOR.PATCH, e.g. 1.0.0")


def _check_dest(out_dir: Path, dest: Path, force: bool) -> None:
    from lstm_embed.pipeline import check_output_folder

    source, target = out_dir.resolve(), dest.resolve()
    if target == source or target in source.parents:
        raise ExportError(f"{dest}: would replace the converted folder {out_dir}; choose another")
    check_output_folder(dest, force)


def export(
    out_dir: str | Path,
    fmt: str,
    dest: str | Path,
    kernel: str = "auto",
    lib_version: str = DEFAULT_LIB_VERSION,
    example_input: ExampleInput = None,
    url: str | None = None,
    force: bool = False,
) -> ExportResult:
    """Write the converted model in out_dir as a ``fmt`` project folder at dest.

    kernel: default kernel choice (auto | reference | plain; a folder converted with --core
    offers auto and the ones its file holds, see kernel_options). example_input: (N, T, m) floats
    whose first sequence the Arduino example runs (zeros without it); a graph's: a dict by
    input name. url: the project page
    Arduino's library.properties requires (a placeholder without it).
    """
    from lstm_embed.pipeline import write_atomically

    out_dir, dest = Path(out_dir), Path(dest)
    _check_options(fmt, kernel, lib_version)
    model = _read_model(out_dir)
    _check_kernel(model, kernel)
    _check_dest(out_dir, dest, force)
    ctx = _context(model, dest, kernel, lib_version, url)
    texts = RENDERERS[fmt](model, ctx, example_input)
    copies = {f"src/{f}": out_dir / f for f in (*model.sources, *model.headers)}
    copies["report.json"] = out_dir / "report.json"

    def write(folder: Path) -> None:
        for rel, source in copies.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / rel)
        for rel, text in texts.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)

    write_atomically(dest, write)
    return ExportResult(out_dir, dest, fmt, tuple(sorted([*copies, *texts])))
