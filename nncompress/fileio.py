"""Atomic file writes: a failed or interrupted stage never leaves a half-written output."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process's umask, read when a file is written (a warm stage takes its client's): os.umask
    only sets it, so it is set to the strictest value for the moment it takes to read it."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """torch.save, atomically and byte-for-byte reproducibly.

    Saving to a file object, not a path: torch names the archive's inner folder after the file it
    is given, and a random temporary name would make identical tensors hash differently in DVC.
    """
    import torch  # here, so that modules which never save tensors do not pay for importing torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _rounded(value: Any, digits: int) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def write_json(path: str | os.PathLike[str], data: dict[str, Any], digits: int = 6) -> None:
    """Write metrics as JSON, floats rounded to `digits` decimals so diffs stay readable."""
    write_text(path, json.dumps(_rounded(data, digits), indent=2) + "\n")


def write_csv(path: str | os.PathLike[str], table: Any) -> None:
    """Write a pandas DataFrame as CSV without its index."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
