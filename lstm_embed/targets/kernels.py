"""The kernel choices of a converted folder: which kernels its C holds (its --core), what
``auto`` runs there, the flags that select one, and the folder's C files; shared by the host
runtime (``lstm_embed.load``) and the project exports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lstm_embed.emit.render import core_kernels

KERNELS = ("auto", "reference", "plain")  # every choice; a --core file offers a subset


@dataclass(frozen=True)
class KernelOptions:
    """The kernel choices a converted file offers, and what they run."""

    core: str  # report.json "core": the --core it was converted with
    held: tuple[str, ...]  # the kernels whose layouts the .c holds (emit.CORE_KERNELS)
    offered: tuple[str, ...]  # "auto", then the reference/plain kernels it holds
    auto: str  # what auto runs, a phrase
    summary: str  # one sentence on the choices, for descriptions and help texts
    brief: str  # the same in a few words (PlatformIO's description has 255 characters)

    @property
    def offered_text(self) -> str:
        """'auto, reference or plain'."""
        *rest, last = self.offered
        return f"{', '.join(rest)} or {last}" if rest else last


def _auto_phrase(core: str, held: tuple[str, ...]) -> str:
    """What ``auto`` runs in a file holding ``held`` (mirrors templates/kernel_select.c.j2)."""
    if core == "all":
        return (
            "MVE on Cortex-M55/M85, the DSP extension on Cortex-M4/M7/M33, optimized plain C"
            " on other Arm cores, the portable reference kernel elsewhere"
        )
    if "mve" in held:
        return "MVE on Cortex-M55/M85, the portable reference kernel on other cores"
    if "dsp" in held:
        return (
            "the DSP-extension kernel on every core, its DSP instructions written in C where"
            " the core lacks them"
        )
    if "plain" in held:
        return "optimized plain C without SIMD on every core"
    return "the portable reference kernel on every core"


def _brief_phrase(core: str, held: tuple[str, ...]) -> str:
    if core == "all":
        return "MVE, DSP or plain C by the core's features, reference off Arm"
    if "mve" in held:
        return f"MVE on Cortex-M55/M85, reference elsewhere (--core {core})"
    only = {"dsp": "DSP", "plain": "plain C"}.get(held[0], "reference")
    return f"{only} on every core (--core {core})"


def kernel_options(core: str) -> KernelOptions:
    """The choices of a file converted with ``--core core``; ValueError for an unknown core."""
    held = core_kernels(core)
    offered = ("auto", *(k for k in KERNELS[1:] if k in held))
    auto = _auto_phrase(core, held)
    if core == "all":
        summary = f"The kernel follows the core: {auto}."
    else:
        alone = "" if len(offered) > 1 else "; the file holds no other kernel"
        summary = f"Converted with --core {core}: auto runs {auto}{alone}."
    return KernelOptions(core, held, offered, auto, summary, _brief_phrase(core, held))


def model_files(out_dir: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the .c files, the .h files) of a converted folder, sorted; only its top level, so a
    build/ folder of `lstm-embed build` is not taken along."""
    files = sorted(p for p in Path(out_dir).iterdir() if p.is_file())
    return (
        tuple(p.name for p in files if p.suffix == ".c"),
        tuple(p.name for p in files if p.suffix == ".h"),
    )


def kernel_flags(name: str, kernel: str) -> list[str]:
    """Preprocessor flags that select ``kernel`` in the generated C (none for auto)."""
    return [] if kernel == "auto" else [f"-D{name.upper()}_USE_{kernel.upper()}_KERNEL"]
