"""Opening a model file: which format it is, its JSON config and its weights.

Formats are told apart by content (a zip archive or HDF5), versions by the keras_version the
file records. Sizes are checked before anything is read into memory.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lstm_embed.frontends.keras import weights
from lstm_embed.frontends.keras.chain import Leaf
from lstm_embed.frontends.keras.errors import Problem, q
from lstm_embed.frontends.keras.hdf5check import check_global_heaps

SUFFIXES = (".keras", ".h5")
MAX_JSON_BYTES = 2**24  # config.json, metadata.json or the model_config attribute
MAX_MEMBER_BYTES = 2**30  # model.weights.h5 in a zip: larger is absurd for this reader
SAVE_AGAIN = 'save the whole model with model.save("model.keras")'
RESAVE = (
    'load it with the TensorFlow/Keras that made it and re-save it with model.save("model.keras")'
)
SAVED_MODEL = f"is a TensorFlow SavedModel folder, not a Keras model file; {RESAVE}"

Datasets = Callable[[Leaf], weights.Named]


@dataclass(frozen=True)
class Opened:
    """What the reader needs from a file, whichever its format."""

    config: Any  # the parsed model config
    config_text: str
    keras_version: str
    container: str  # ".keras" or ".h5"
    datasets: Datasets
    meta: dict[str, str]


@contextmanager
def open_model(path: Path) -> Iterator[Opened]:
    """Check the path, then open it as a .keras zip or an .h5 file (by content)."""
    _check_path(path)
    if zipfile.is_zipfile(path):
        with _open_zip(path) as opened:
            yield opened
    elif h5py.is_hdf5(str(path)):
        with _open_h5(path) as opened:
            yield opened
    elif path.suffix.lower() == ".keras":
        raise Problem(
            "is not a zip archive (truncated or corrupt?); a .keras file is a zip holding"
            " config.json and model.weights.h5"
        )
    else:
        raise Problem(
            "is not an HDF5 file (truncated or corrupt?); a Keras .h5 file is HDF5 with a"
            " model_config attribute"
        )


def _check_path(path: Path) -> None:
    if not path.exists():
        raise Problem("no such file")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            raise Problem(SAVED_MODEL)
        raise Problem("is a folder, not a Keras model file; expected a .keras or .h5 file")
    suffix = path.suffix.lower()
    if suffix in (".pb", ".pbtxt"):
        raise Problem(f"is a TensorFlow graph, not a Keras model file; {RESAVE}")
    if suffix not in SUFFIXES:
        shown = q(path.suffix) if path.suffix else "no suffix"
        raise Problem(
            f"unsupported file type ({shown}); expected a Keras model file: .keras (Keras 3 or"
            " tf_keras) or .h5 (legacy HDF5), or an ONNX file (.onnx)"
        )
    if not path.is_file():
        raise Problem("is not a regular file")


# --- .keras ---------------------------------------------------------------------------------


@contextmanager
def _open_zip(path: Path) -> Iterator[Opened]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise Problem(f"is not a valid zip archive ({exc}); truncated?") from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        if "config.json" not in members:
            raise Problem(f"the .keras archive has no config.json; {SAVE_AGAIN}")
        text = _member_text(archive, members["config.json"])
        config = parse_json(text, "config.json")
        meta = {}
        if "metadata.json" in members:
            meta = parse_json(_member_text(archive, members["metadata.json"]), "metadata.json")
        if not isinstance(meta, dict):
            raise Problem("metadata.json is not a JSON object")
        info = members.get("model.weights.h5")
        if info is None:
            sharded = " (sharded weights are not supported)" if _sharded(members) else ""
            raise Problem(f"the .keras archive has no model.weights.h5{sharded}; {SAVE_AGAIN}")
        if info.file_size > MAX_MEMBER_BYTES:
            raise Problem(
                f"model.weights.h5 in the archive claims {info.file_size} bytes, more than the"
                f" {MAX_MEMBER_BYTES} (MAX_MEMBER_BYTES) this reader accepts"
            )
        with _member_stream(path, archive, info) as stream:
            check_global_heaps(stream, info.file_size)
            stream.seek(0)
            with _h5(stream, "model.weights.h5") as wf:
                yield _zip_opened(config, text, meta, wf)


def _zip_opened(config: Any, text: str, meta: dict, wf: h5py.File) -> Opened:
    version = str(meta.get("keras_version", ""))
    extra = {k: str(v) for k, v in meta.items() if k != "keras_version"}
    return Opened(config, text, version, ".keras", partial(weights.zip_datasets, wf), extra)


def _sharded(members: dict[str, zipfile.ZipInfo]) -> bool:
    return any(name.endswith(".weights.json") for name in members)


def _member_text(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    if info.file_size > MAX_JSON_BYTES:
        raise Problem(
            f"{info.filename} in the archive claims {info.file_size} bytes, more than the"
            f" {MAX_JSON_BYTES} (MAX_JSON_BYTES) this reader accepts"
        )
    data = b"".join(_chunks(archive, info))
    return data.decode("utf-8", errors="replace")


def _chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """A member's bytes, 1 MiB at a time; zipfile checks the CRC at the end."""
    try:
        with archive.open(info) as member:
            while chunk := member.read(2**20):
                yield chunk
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise Problem(f"{info.filename} in the archive is corrupt ({exc})") from None


@contextmanager
def _member_stream(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[Any]:
    """A seekable file object over a member, without reading it into memory.

    Keras stores members uncompressed: then a window onto the archive itself (cheap seeks);
    a compressed member goes through zipfile's own (slower to seek) stream.
    """
    if info.flag_bits & 0x1:
        raise Problem(f"{info.filename} in the archive is encrypted")
    for _ in _chunks(archive, info):
        pass  # a damaged archive is caught by its CRC here, before libhdf5 parses it
    if info.compress_type != zipfile.ZIP_STORED:
        with archive.open(info) as member:
            yield member
        return
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        header = raw.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise Problem(f"{info.filename} in the archive has a broken local header")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        yield _Window(raw, start, info.file_size)


class _Window(io.RawIOBase):
    """Bytes [start, start + size) of an open file, as a read-only seekable file."""

    def __init__(self, raw: Any, start: int, size: int) -> None:
        super().__init__()
        self._raw, self._start, self._size, self._pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        if count == 0:
            return 0
        self._raw.seek(self._start + self._pos)
        got = self._raw.readinto(memoryview(buffer)[:count])
        self._pos += got
        return got


# --- .h5 ------------------------------------------------------------------------------------


@contextmanager
def _open_h5(path: Path) -> Iterator[Opened]:
    with open(path, "rb") as raw:
        check_global_heaps(raw, path.stat().st_size)
    with _h5(str(path), "the file") as f:
        text = _attr_text(f, "model_config")
        if text is None:
            raise Problem(
                "has no model_config: it holds weights only (model.save_weights);"
                f' {SAVE_AGAIN} or model.save("model.h5")'
            )
        config = parse_json(text, "the model_config attribute")
        group = weights.walk(f, "model_weights")
        if not isinstance(group, h5py.Group):
            raise Problem("has a model_config but no model_weights group: no weights were saved")
        version = _attr_text(f, "keras_version") or _attr_text(group, "keras_version") or ""
        backend = _attr_text(f, "backend")
        meta = {"backend": backend} if backend else {}
        yield Opened(config, text, version, ".h5", partial(weights.h5_datasets, group), meta)


def _attr_text(obj: h5py.HLObject, name: str) -> str | None:
    if name not in obj.attrs:
        return None
    value = weights.read_attr(obj, name)
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise Problem(f"the {name} attribute is not a single text")
        value = value.reshape(-1)[0]
    text = weights.text(value)
    if len(text) > MAX_JSON_BYTES:
        raise Problem(f"the {name} attribute is over {MAX_JSON_BYTES} (MAX_JSON_BYTES) bytes")
    return text


@contextmanager
def _h5(source: Any, what: str) -> Iterator[h5py.File]:
    try:
        f = h5py.File(source, "r")
    except OSError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Problem(f"{what} cannot be opened as HDF5 (truncated or corrupt?): {first}") from None
    with f:
        yield f


# --- JSON and versions ----------------------------------------------------------------------


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Problem(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise Problem(f"{what} is not usable JSON ({type(exc).__name__})") from None


def keras_major(version: str, config_text: str, container: str) -> int:
    """2 or 3: from the recorded version, else from what only one version writes."""
    match = re.match(r"\s*(\d+)\.", version)
    if match:
        major = int(match[1])
        if major < 2:
            raise Problem(f"was written by Keras {version}; only Keras 2 and 3 files are read")
        return 3 if major >= 3 else 2
    if '"batch_shape"' in config_text:
        return 3  # Keras 3's InputLayer key
    if '"batch_input_shape"' in config_text or '"time_major"' in config_text:
        return 2
    return 3 if container == ".keras" else 2
