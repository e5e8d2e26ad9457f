"""Static checks on generated code: cppcheck clean, no dynamic allocation or libc calls, no
VLAs, no recursion, and a bounded stack (gcc -fcallgraph-info=su: per-function frames and the
call graph, so the worst path from each public entry point is summed, not guessed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lstm_embed.pipeline import convert_ir
from lstm_embed.tools import fuzz

from .helpers import generated_c

MODELS = {
    # LSTM(1): the smallest model
    "tiny": fuzz.ModelSpec(seed=1, inputs=1, timesteps=3, lstm=(fuzz.LSTMSpec(1),)),
    # every operation: both recurrent activations, all Dense activations, sequences
    "all_ops": fuzz.ModelSpec(
        seed=2,
        inputs=5,
        timesteps=7,
        lstm=(fuzz.LSTMSpec(12), fuzz.LSTMSpec(6, "hard_sigmoid", bias=None)),
        dense=(
            fuzz.DenseSpec(8, "relu"),
            fuzz.DenseSpec(7, "tanh"),
            fuzz.DenseSpec(6, "sigmoid"),
            fuzz.DenseSpec(5, "linear"),
            fuzz.DenseSpec(4, "softmax"),
        ),
        return_sequences=True,
        fixed_length=False,
    ),
    # GRU layers of both forms around an LSTM (sigmoid and hard_sigmoid)
    "gru_ops": fuzz.ModelSpec(
        seed=4,
        inputs=3,
        timesteps=5,
        lstm=(
            fuzz.LSTMSpec(9, kind="gru"),
            fuzz.LSTMSpec(5, "hard_sigmoid", bias=None),
            fuzz.LSTMSpec(7, "hard_sigmoid", kind="gru", reset_after=False),
        ),
        dense=(fuzz.DenseSpec(3, "softmax"),),
    ),
    # int8 rows longer than one int32 sum (blocked sums): an LSTM on 530 inputs, a Dense of
    # 600 inputs
    "long_rows": fuzz.ModelSpec(
        seed=5,
        inputs=530,
        timesteps=3,
        lstm=(fuzz.LSTMSpec(8),),
        dense=(fuzz.DenseSpec(600, "tanh"), fuzz.DenseSpec(3, "softmax")),
    ),
    # the largest shapes of the issue
    "largest": fuzz.ModelSpec(
        seed=3,
        inputs=16,
        timesteps=100,
        lstm=(fuzz.LSTMSpec(64), fuzz.LSTMSpec(64), fuzz.LSTMSpec(64)),
        dense=(fuzz.DenseSpec(64, "relu"), fuzz.DenseSpec(64, "softmax")),
    ),
}
ENTRY_POINTS = ("run", "run_f32", "step", "step_f32", "reset", "quantize_input")
# Worst-case stack of any entry point. The state lives in the caller's struct, so the stack
# must not grow with the model; measured <= 840 bytes (x86-64 -O2, largest model) with the
# optimized kernels, so this leaves about 2x margin.
STACK_LIMIT_BYTES = 1536
# Compilers may turn loops into these; nothing else from libc may be linked.
ALLOWED_UNDEFINED = {"memcpy", "memset", "memmove"}
# Arm EABI run-time helpers from libgcc (soft float, 64-bit shifts and products, division):
# stateless leaf routines, no allocation. Counted with this stack each since the .ci file
# of the model does not know their frames (they push a few registers).
RUNTIME_HELPER = re.compile(r"__aeabi_\w+\Z")
HELPER_STACK_BYTES = 32


def allowed_external(symbol: str) -> bool:
    return symbol in ALLOWED_UNDEFINED or bool(RUNTIME_HELPER.match(symbol))


CPPCHECK_FLAGS = [
    "--error-exitcode=1",
    "--enable=warning,portability,performance",
    "--std=c99",
    "--inline-suppr",
    "--quiet",
    # Right shifts of negative int32 (rounding shifts, table indices) are implementation-
    # defined in C99 6.5.7p5, not undefined; GCC, Clang and Arm Compiler shift arithmetically,
    # as the generated header states. cppcheck reports them under this id together with left
    # shifts of negative values (which would be UB): those are caught at run time by
    # -fsanitize=shift in the fuzz tests instead.
    "--suppress=shiftNegativeLHS",
    # The kernels' row-sum loops stop at `end = a + columns`, one past the last element of the
    # caller's buffer: valid C99 (6.5.6p8) and never dereferenced; cppcheck's cross-function
    # check flags the pointer itself.
    "--suppress=ctuPointerArith",
]
# cppcheck explores every #if configuration; on the 1.6 MB "largest" file that takes minutes,
# and its code is the same template text as the others with bigger arrays. "long_rows" too:
# 28 minutes on a loaded 2-core machine (clean, both configurations, when it was added).
CPPCHECK_MODELS = ("tiny", "all_ops", "gru_ops")


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_dir(request, tmp_path_factory) -> Path:
    case = fuzz.build_case(MODELS[request.param])
    out = tmp_path_factory.mktemp(request.param) / "net"
    with np.errstate(all="ignore"):
        convert_ir(case.model, case.calibration, out, name="net")
    return out


@pytest.mark.skipif(shutil.which("cppcheck") is None, reason="cppcheck not installed")
@pytest.mark.parametrize("kernel", ["", "-DNET_USE_PLAIN_KERNEL"])
def test_cppcheck_clean(model_dir: Path, kernel: str) -> None:
    if model_dir.parent.name.rstrip("0123456789") not in CPPCHECK_MODELS:
        pytest.skip("cppcheck runs on the small models (same code, smaller arrays)")
    defines = [kernel] if kernel else []  # none: cppcheck checks every #if configuration
    cmd = ["cppcheck", *CPPCHECK_FLAGS, *defines, f"-I{model_dir}", str(model_dir / "net.c")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def test_no_allocation_in_source(model_dir: Path) -> None:
    code = _strip_comments(generated_c(model_dir))
    for word in ("malloc", "calloc", "realloc", "free", "alloca", "setjmp", "printf"):
        assert not re.search(rf"\b{word}\b", code), word


def _compile(model_dir: Path, cc: list[str], tmp: Path) -> tuple[Path, Path]:
    obj = tmp / "net.o"
    # =2: also the arrays of net_weights.h (level 1, in -Wall, skips a header's), so an array
    # no kernel reads is still an error
    cmd = [*cc, "-std=c99", "-Wall", "-Wextra", "-Wvla", "-Werror", "-Wunused-const-variable=2"]
    cmd.append("-fcallgraph-info=su")
    subprocess.run(
        [*cmd, f"-I{model_dir}", "-c", str(model_dir / "net.c"), "-o", str(obj)],
        check=True,
        capture_output=True,
        cwd=tmp,
    )
    return obj, tmp / "net.ci"


TARGETS = {
    "host-O2": ["gcc", "-O2"],
    "host-Os-plain": ["gcc", "-Os", "-DNET_USE_PLAIN_KERNEL"],
    "cortex-m0plus-Os": ["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb", "-Os"],
    "cortex-m4-O2": ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-O2"],
    "cortex-m55-O2": ["arm-none-eabi-gcc", "-mcpu=cortex-m55", "-mthumb", "-O2"],
}


def parse_callgraph(ci: Path) -> tuple[dict[str, tuple[int, str]], dict[str, set[str]]]:
    """(function -> (frame bytes, qualifier)), (caller -> callees) from a .ci file."""
    text = ci.read_text()
    frames, calls = {}, {}
    for title, label in re.findall(r'node: \{ title: "([^"]+)" label: "([^"]+)"', text):
        found = re.search(r"(\d+) bytes \(([^)]+)\)", label)
        name = title.split(":")[-1]
        frames[name] = (int(found[1]), found[2]) if found else (HELPER_STACK_BYTES, "external")
    for src, dst in re.findall(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
        calls.setdefault(src.split(":")[-1], set()).add(dst.split(":")[-1])
    return frames, calls


def worst_stack(function: str, frames, calls, path: tuple[str, ...] = ()) -> int:
    assert function not in path, f"recursion: {' -> '.join((*path, function))}"
    deeper = [worst_stack(c, frames, calls, (*path, function)) for c in calls.get(function, ())]
    return frames.get(function, (0, ""))[0] + max(deeper, default=0)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_stack_bounded_and_no_recursion(model_dir: Path, target: str, tmp_path: Path) -> None:
    cc = TARGETS[target]
    if shutil.which(cc[0]) is None:
        pytest.skip(f"{cc[0]} not installed")
    obj, ci = _compile(model_dir, cc, tmp_path)
    frames, calls = parse_callgraph(ci)
    external = {f for f, (_, kind) in frames.items() if kind == "external"}
    assert all(map(allowed_external, external)), f"calls outside the model: {external}"
    dynamic = {f: kind for f, (_, kind) in frames.items() if kind not in ("static", "external")}
    assert not dynamic, f"stack not static: {dynamic}"
    stacks = {e: worst_stack(f"net_{e}", frames, calls) for e in ENTRY_POINTS}
    print(f"{model_dir.parent.name} {target} worst-case stack bytes: {stacks}")
    assert max(stacks.values()) <= STACK_LIMIT_BYTES, stacks
    nm = "arm-none-eabi-nm" if cc[0].startswith("arm") else "nm"
    undefined = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True)
    symbols = {line.split()[-1] for line in undefined.stdout.splitlines() if line.strip()}
    outside = {s for s in symbols if not allowed_external(s)}
    assert not outside, f"links against {outside}"
