"""Where lstm-embed's data folders are: templates/ (the Jinja2 C templates) and firmware/ (the
Cortex-M startup code, linker scripts and board files).

Both live at the top of the repository. The wheel and the sdist carry them inside the package as
package data (``lstm_embed/templates``, ``lstm_embed/firmware``; pyproject.toml maps them), so an
installed lstm-embed finds them through importlib.resources. In a checkout (``pip install -e``
or PYTHONPATH) the package has no copy and they sit beside it. This module is the only place
that knows either; everything else asks ``templates_dir()`` or ``firmware_dir()``.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

# a file each folder must hold, so that a stray empty folder is never taken for it
_MARKERS = {"templates": "model.c.j2", "firmware": "common/startup.S"}


@cache
def _folder(name: str) -> Path:
    package = files(__package__)
    # a wheel unpacked by pip (never a zip: lstm-embed hands these folders to gcc and Jinja2)
    packaged = Path(str(package / name))
    # an editable install or a checkout on PYTHONPATH: the top of the repository
    checkout = Path(str(package)).parent / name
    for candidate in (packaged, checkout):
        if (candidate / _MARKERS[name]).is_file():
            return candidate
    raise FileNotFoundError(
        f"lstm-embed's {name}/ folder is missing: looked in {packaged} and {checkout};"
        " reinstall lstm-embed from a wheel or a checkout"
    )


def templates_dir() -> Path:
    """The folder of the Jinja2 templates that write every C file."""
    return _folder("templates")


def firmware_dir() -> Path:
    """The folder of the Cortex-M firmware sources (common/, boards/)."""
    return _folder("firmware")
