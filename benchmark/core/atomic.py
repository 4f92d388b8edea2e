"""Atomic file writes, hashing, and JSON objects read back with errors that name the file.

Every output file of the harness (CSV, JSON, Markdown, HTML, PNG, npz) is written through :func:`atomic_write`:
to a temporary file in the same folder, flushed and fsync'ed, then renamed over the final name. A reader, or a
process killed half-way, sees either the previous complete file or the new complete file, never a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(binary file)`` on a temporary file next to ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_json_object(path: str | os.PathLike, remedy: str = "") -> dict:
    """The JSON object (a dict) in ``path``; ``ValueError`` naming the file, what is wrong and ``remedy`` when it
    is not readable JSON or not an object (``OSError`` when it cannot be read at all)."""
    path = Path(path)
    tail = f"; {remedy}" if remedy else ""
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not readable JSON ({err}){tail}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}, not a JSON object{tail}")
    return value
