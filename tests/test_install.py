"""lstm-embed installed as a user installs it: the sdist is built from a copy of the project, the
wheel is built from that sdist (what `pip install lstm-embed` does with an sdist), and the wheel
goes into a fresh virtual environment (no system site-packages, no PYTHONPATH, run from a folder
outside the project). There it inspects, converts, runs on the host and in QEMU, profiles, loads
and exports a fixture model, and every output equals the source tree's bit for bit.

The QEMU part needs arm-none-eabi-gcc and qemu-system-arm: it skips without them unless
LSTM_EMBED_REQUIRE_FIRMWARE is set (CI). The fresh environment gets numpy, h5py and Jinja2 at
this environment's versions, from pip's cache or the package index.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

import lstm_embed

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "keras" / "lstm_dense.k3.keras"
DATA_FOLDERS = ("templates", "firmware")
# what the sdist is built from: the files a release carries (no tests, builds or caches)
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE", "lstm_embed", *DATA_FOLDERS)
RUNTIME_DEPENDENCIES = ("numpy", "h5py", "jinja2")
PIP_TIMEOUT_S = 300.0  # the first run may download numpy and h5py
COMMAND_TIMEOUT_S = 180.0


def _files_under(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH, no virtual environment activated."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


def _check(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def _build(kind: str, source: Path, dest: Path) -> tuple[Path, str]:
    """Build an sdist or a wheel of source with setuptools' PEP 517 backend, as pip would."""
    dest.mkdir(exist_ok=True)
    code = f"from setuptools import build_meta as b; print(b.build_{kind}({str(dest)!r}))"
    log = _check([sys.executable, "-c", code], source, _clean_env(), COMMAND_TIMEOUT_S)
    return dest / log.strip().splitlines()[-1], log


def _setuptools_warnings(log: str) -> list[str]:
    # setuptools' deprecations print a box of "!!" lines around a *Warning class name
    return [line for line in log.splitlines() if "Warning" in line or line.startswith("!!")]


def _shared(factory: pytest.TempPathFactory, name: str, make) -> Path:
    """A folder made once per test run, shared by the xdist workers (each runs this module's
    fixtures on its own), made by make(folder) under a lock; tests only read it."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above the workers' own
    folder = root / f"install-{name}"
    with open(root / f"install-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / "done").touch()
    return folder


def _make_packages(root: Path) -> None:
    project = root / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, project / name)
    sdist, sdist_log = _build("sdist", project, root / "dist")
    with tarfile.open(sdist) as tar:
        tar.extractall(root / "unpacked", filter="data")
    (unpacked,) = (root / "unpacked").iterdir()
    _, wheel_log = _build("wheel", unpacked, root / "dist")
    (root / "build.log").write_text(sdist_log + wheel_log)


@pytest.fixture
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = _shared(tmp_path_factory, "packages", _make_packages)
    (sdist,) = (root / "dist").glob("*.tar.gz")
    (wheel,) = (root / "dist").glob("*.whl")
    return {"sdist": sdist, "wheel": wheel, "log": root / "build.log"}


def test_the_sdist_carries_templates_and_firmware(packages):
    with tarfile.open(packages["sdist"]) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {n.removeprefix(top + "/") for n in tar.getnames()}
    for folder in DATA_FOLDERS:
        wanted = {f"{folder}/{f}" for f in _files_under(REPO / folder)}
        assert wanted and wanted <= names, sorted(wanted - names)[:5]


def test_the_wheel_carries_the_package_and_its_data(packages):
    assert packages["wheel"].name.startswith(f"lstm_embed-{lstm_embed.__version__}-py3-none-any")
    with zipfile.ZipFile(packages["wheel"]) as whl:
        names = set(whl.namelist())
    modules = {f"lstm_embed/{f}" for f in _files_under(REPO / "lstm_embed") if f.endswith(".py")}
    assert modules <= names, f"not in the wheel (pyproject's packages?): {modules - names}"
    for folder in DATA_FOLDERS:
        wanted = {f"lstm_embed/{folder}/{f}" for f in _files_under(REPO / folder)}
        assert wanted <= names, sorted(wanted - names)[:5]
    assert not {n for n in names if n.startswith(("templates/", "firmware/", "tests/"))}


def test_building_prints_no_setuptools_warning(packages):
    warnings = _setuptools_warnings(packages["log"].read_text())
    assert not warnings, "\n".join(warnings)


# ------------------------------------------------------------------ the installed tool


def _make_venv(root: Path, wheel: Path) -> None:
    """A fresh virtual environment holding the wheel and its dependencies only."""
    env_dir = root / "env"
    _check(
        [sys.executable, "-m", "venv", "--without-pip", env_dir],
        root,
        _clean_env(),
        COMMAND_TIMEOUT_S,
    )
    pins = [f"{name}=={version(name)}" for name in RUNTIME_DEPENDENCIES]
    # this environment's pip installs into the new one (the new one's own would take seconds)
    _check(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            env_dir / "bin" / "python",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            wheel,
            *pins,
        ],
        root,
        _clean_env(),
        PIP_TIMEOUT_S,
    )


def _workspace(folder: Path) -> Path:
    """A folder outside the project with the fixture model and its inputs in it."""
    folder.mkdir()
    shutil.copyfile(FIXTURE, folder / "model.keras")
    np.save(folder / "x.npy", np.load(FIXTURE.with_name("lstm_dense.k3.npz"))["x"])
    return folder


class Tool:
    """One lstm-embed, run as `python -m lstm_embed ...` in its own folder."""

    def __init__(self, python: Path, cwd: Path, env: dict[str, str]) -> None:
        self.python, self.cwd, self.env = python, cwd, env

    def __call__(self, *args: str) -> str:
        return _check(
            [self.python, "-m", "lstm_embed", *args], self.cwd, self.env, COMMAND_TIMEOUT_S
        )

    def python_code(self, code: str) -> str:
        return _check([self.python, "-c", code], self.cwd, self.env, COMMAND_TIMEOUT_S)


def _tools(venv: Path, root: Path) -> tuple[Tool, Tool]:
    """(the installed wheel, the source tree), each in its own folder under root."""
    installed = Tool(venv / "bin" / "python", root / "installed", _clean_env())
    source = Tool(Path(sys.executable), root / "source", _clean_env(PYTHONPATH=str(REPO)))
    return installed, source


@pytest.fixture
def venv(packages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _shared(tmp_path_factory, "venv", lambda r: _make_venv(r, packages["wheel"]))
    return root / "env"


@pytest.fixture
def tools(venv, tmp_path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Tool, Tool]:
    """The fixture converted by each tool (once per run), in this test's own folders."""

    def convert(root: Path) -> None:
        for tool in _tools(venv, root):
            _workspace(tool.cwd)
            tool("convert", "model.keras", "-c", "x.npy", "-o", "out")

    converted = _shared(tmp_path_factory, "converted", convert)
    for name in ("installed", "source"):
        shutil.copytree(converted / name, tmp_path / name)
    return _tools(venv, tmp_path)


def _same_files(a: Path, b: Path) -> None:
    names = _files_under(a)
    assert names == _files_under(b)
    differ = [n for n in sorted(names) if (a / n).read_bytes() != (b / n).read_bytes()]
    assert not differ, f"differ between the wheel and the source tree: {differ}"


def test_the_installed_tool_uses_its_own_files(tools, venv):
    installed, _ = tools
    expected = f"lstm-embed {lstm_embed.__version__}"  # the source tree's version
    assert installed("--version").strip() == expected
    script = _check(
        [venv / "bin" / "lstm-embed", "--version"], installed.cwd, installed.env, COMMAND_TIMEOUT_S
    )
    assert script.strip() == expected
    where = installed.python_code(
        "import lstm_embed; from lstm_embed import resources as r;"
        "print(lstm_embed.__file__); print(r.templates_dir()); print(r.firmware_dir())"
    )
    site = (venv / "lib").resolve()
    for line in where.split():
        assert site in Path(line).resolve().parents, f"{line} is not in the fresh environment"


def test_inspect_and_convert_equal_the_source_tree(tools):
    installed, source = tools
    assert installed("inspect", "model.keras") == source("inspect", "model.keras")
    _same_files(installed.cwd / "out", source.cwd / "out")


def test_run_load_and_export_equal_the_source_tree(tools):
    installed, source = tools
    load = (
        "import numpy as np, lstm_embed;"
        "np.save('y_load.npy', lstm_embed.load('out').predict(np.load('x.npy')))"
    )
    for tool in tools:
        tool("run", "out", "-i", "x.npy", "-o", "y_host.npy")
        tool.python_code(load)
        tool("export", "out", "-f", "cmake", "-o", "lib")
    for outputs in ("y_host.npy", "y_load.npy"):
        y = np.load(installed.cwd / outputs)
        assert y.shape == (3, 2)
        assert np.array_equal(y, np.load(source.cwd / outputs)), outputs
    _same_files(installed.cwd / "lib", source.cwd / "lib")


def test_build_run_and_profile_in_qemu_equal_the_source_tree(tools, toolchain):
    installed, source = tools
    installed("build", "out", "--board", "qemu-m4")
    assert (installed.cwd / "out" / "build" / "qemu-m4" / "firmware.elf").is_file()
    installed("run", "out", "--board", "qemu-m4", "-i", "x.npy", "-o", "y_qemu.npy")
    source("run", "out", "-i", "x.npy", "-o", "y_host.npy")
    assert np.array_equal(np.load(installed.cwd / "y_qemu.npy"), np.load(source.cwd / "y_host.npy"))
    # QEMU's instruction counts are exact, so the two tables are equal to the character
    profile = ("profile", "out", "--board", "qemu-m4")
    table = installed(*profile)
    assert "instr/step" in table
    assert table == source(*profile)


def test_pyproject_lists_every_subpackage() -> None:
    """The wheel's package list is explicit (templates/ and firmware/ are mapped into it), so a
    new subpackage must be added there or the installed tool cannot import it."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(lstm_embed(?:\.[a-z_]+)*)"', text.split("packages = [", 1)[1]))
    found = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "lstm_embed").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
