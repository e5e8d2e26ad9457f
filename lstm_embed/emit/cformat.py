"""Literal formatting for the C templates: small, tested helpers; templates only arrange."""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

C_KEYWORDS = frozenset(
    [
        "auto",
        "break",
        "case",
        "char",
        "const",
        "continue",
        "default",
        "do",
        "double",
        "else",
        "enum",
        "extern",
        "float",
        "for",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "register",
        "restrict",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "struct",
        "switch",
        "typedef",
        "union",
        "unsigned",
        "void",
        "volatile",
        "while",
        "_Bool",
        "_Complex",
        "_Imaginary",
        "_Alignas",
        "_Alignof",
        "_Atomic",
        "_Generic",
        "_Noreturn",
        "_Static_assert",
        "_Thread_local",
        "bool",
        "true",
        "false",
        "asm",
        "main",
    ]
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class CNameError(ValueError):
    pass


def c_identifier(name: str) -> str:
    """Return ``name`` if it can prefix C symbols; raise CNameError naming the problem.

    >>> c_identifier("har_lstm")
    'har_lstm'
    >>> c_identifier("int")
    Traceback (most recent call last):
    ...
    lstm_embed.emit.cformat.CNameError: 'int' is a C reserved word; choose another name
    """
    if not _IDENTIFIER.match(name):
        raise CNameError(
            f"{name!r} is not a valid C identifier"
            " (letters, digits and _, not starting with a digit)"
        )
    if name in C_KEYWORDS:
        raise CNameError(f"{name!r} is a C reserved word; choose another name")
    if name.startswith("__") or re.match(r"_[A-Z]", name):
        raise CNameError(f"{name!r} is reserved for the C implementation (leading __ or _X)")
    if len(name) > 40:
        raise CNameError(f"{name!r} is longer than 40 characters")
    return name


def c_int_array(values: Iterable[int] | np.ndarray, per_line: int = 16) -> str:
    """Comma-separated integer literals, ``per_line`` to a line, for an array initializer.

    >>> print(c_int_array([1, -2, 3], per_line=2))
    1, -2,
    3
    """
    items = [str(int(v)) for v in np.asarray(values).ravel()]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return ",\n".join(lines)


def c_int32(value: int) -> str:
    """An int32 literal that is valid C for every value (INT32_MIN has no literal).

    >>> c_int32(-2147483648)
    '(-2147483647 - 1)'
    """
    value = int(value)
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"{value} does not fit in int32")
    return "(-2147483647 - 1)" if value == -(2**31) else str(value)


def c_float(value: float) -> str:
    """A float literal that reads back as the same float32.

    >>> c_float(0.1)
    '0.100000001f'
    >>> c_float(3.0)
    '3.00000000f'
    """
    v = float(np.float32(value))
    if not np.isfinite(v):
        raise ValueError(f"{value} is not finite")
    return f"{v:.9g}f" if "e" in f"{v:.9g}" or "." in f"{v:.9g}" else f"{v:.8f}f"


def c_float_array(values: Iterable[float] | np.ndarray, per_line: int = 6) -> str:
    items = [c_float(v) for v in np.asarray(values, dtype=np.float32).ravel()]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return ",\n".join(lines)


def c_comment(text: str) -> str:
    """Text that is safe inside a /* */ comment.

    >>> c_comment("a */ b")
    'a * / b'
    """
    return text.replace("*/", "* /").replace("/*", "/ *")
