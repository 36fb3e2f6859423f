"""Writing files only where the user said: names confined to an output folder, no silent overwrites."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from .errors import OutputPathError


def safe_name(name: str) -> str:
    """A file-name stem made of letters, digits, ``-``, ``_`` and ``.`` only (never ``..``, never empty)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    return cleaned.replace("..", "_")


def output_path(out_dir: str | os.PathLike, name: str, *, overwrite: bool = False) -> Path:
    """``out_dir / name``, refusing names that leave ``out_dir`` and existing files unless ``overwrite``."""
    root = Path(out_dir).resolve()
    blocking = next((folder for folder in (root, *root.parents) if folder.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise OutputPathError(
            f"the output folder {out_dir} is not a folder: {blocking} is a file; choose another --out"
        )
    if len(name.encode()) > 255:  # the file system's limit on one name: refuse before any compute, not with OSError
        raise OutputPathError(f"output name {name[:40]}... is longer than 255 bytes; shorten the input's file name")
    target = (root / name).resolve()
    if root != target.parent and root not in target.parents:
        raise OutputPathError(f"output name {name!r} leaves the output folder {root}; use a plain file name")
    if target.exists() and not overwrite:
        raise OutputPathError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
    return target  # the folder is made when the first file is written: a refused run leaves nothing behind


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
