"""The reader's internal error: a one-line problem that read_model prefixes with the path."""

from __future__ import annotations

from typing import Any

NAME_CHARS = 80  # names from a file are quoted at most this long in messages


class Problem(Exception):
    """What is wrong with the file, in one line, without the path (read_model adds it)."""


def q(name: Any) -> str:
    """A name from the file, quoted, on one line and short, for a message."""
    text = " ".join(str(name).split())
    if len(text) > NAME_CHARS:
        text = text[: NAME_CHARS - 3] + "..."
    return f"'{text}'"


def one_line(text: str) -> str:
    return " ".join(text.split())
