"""Writing files only where the user said: names confined to an output folder, no silent overwrites.

Every write of every command goes through :func:`output_path` (the name, and every folder on its way, must
resolve inside the output folder: a planted symlink that leads out is refused) and :func:`write_atomic`
(a temporary file and a rename, with the mode ``open()`` would give). :func:`check_output_folder` tells,
before any compute, whether the output folder can be written at all.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from .errors import OutputPathError


def safe_name(name: str) -> str:
    """A file-name stem made of letters, digits, ``-``, ``_`` and ``.`` only (never ``..``, never empty)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "image"
    return cleaned.replace("..", "_")


def _nearest_existing(folder: Path) -> Path:
    """``folder`` or its nearest existing ancestor; refused when that is not a folder."""
    existing = next(candidate for candidate in (folder, *folder.parents) if candidate.exists())
    if not existing.is_dir():
        raise OutputPathError(f"the output folder {folder} is not a folder: {existing} is a file; choose another --out")
    return existing


def output_path(out_dir: str | os.PathLike, name: str, *, overwrite: bool = False) -> Path:
    """``out_dir / name`` resolved, refusing what would be written outside ``out_dir``.

    ``name`` is a file name or a relative path (``raw/batches/batch-000000.parquet``). Refused with
    :class:`OutputPathError`: a name (or any folder on its way) that resolves outside ``out_dir`` (``..``, an
    absolute name, a symlink leading out), a name over 255 bytes, and an existing file unless ``overwrite``.
    ``out_dir`` itself may be a symlink: it is the folder the user chose.
    """
    root = Path(out_dir).resolve()
    _nearest_existing(root)
    if any(len(part.encode()) > 255 for part in Path(name).parts):  # the file system's limit: refuse before compute
        raise OutputPathError(f"output name {name[:40]}... is longer than 255 bytes; shorten the input's file name")
    target = (root / name).resolve()  # follows every symlink on the way, so a link leading out shows here
    if root not in target.parents:
        raise OutputPathError(
            f"output name {name!r} resolves to {target}, outside the output folder {root} (a symlink, '..' or an "
            "absolute name); remove that link or choose another --out"
        )
    if target.exists() and not overwrite:
        raise OutputPathError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")
    return target  # the folder is made when the first file is written: a refused run leaves nothing behind


def check_output_folder(out_dir: str | os.PathLike) -> None:
    """Refuse, before any compute, an output folder that cannot be written (:class:`OutputPathError`).

    An existing folder is probed with a temporary file; a missing one by making and removing its first missing
    folder, so a refused or failed run leaves nothing behind. (Permission bits alone cannot tell: root passes
    every ``os.access`` check, and ``/proc`` takes no new files.)
    """
    root = Path(out_dir).absolute()
    existing = _nearest_existing(root)
    try:
        if existing == root:
            probe = root / f".hf-iia-probe-{secrets.token_hex(8)}.tmp"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            probe.unlink()
        else:
            first_missing = root
            while first_missing.parent != existing:
                first_missing = first_missing.parent
            first_missing.mkdir()
            first_missing.rmdir()
    except OSError as error:
        raise OutputPathError(
            f"cannot write into the output folder {out_dir} ({error.strerror or error}); choose another --out"
        ) from None


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    The file gets the mode ``open(path, "wb")`` would give it: ``0o666 & ~umask`` for a new file, the old mode
    for a replaced one. ``path`` should come from :func:`output_path`; the rename replaces a symlink at ``path``
    itself, never the file it points to.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    old_mode = path.lstat().st_mode & 0o7777 if path.is_file() and not path.is_symlink() else None
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            # os.open applies the umask to 0o666, as open() does (mkstemp would give 0o600).
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
            break
        except FileExistsError:
            continue
    try:
        if old_mode is not None:
            os.fchmod(handle, old_mode)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
