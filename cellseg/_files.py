"""Writing output files: one atomic-write helper, and the check of an output folder.

:func:`atomic_write` is the one way cellseg writes a file (label TIFFs, CSV tables,
PNG overlays, CTC masks, model files...): the data goes to a hidden temporary file
beside the target, which then replaces the target with ``os.replace``, so a reader
never sees a half-written file and a failed write leaves nothing behind. The
temporary file is created with mode ``0o666`` filtered by the process umask, as
``open(path, "w")`` would (``tempfile.mkstemp`` gives ``0o600``), so outputs can be
read by the group and others exactly as with a normal write.

:func:`remove_stale_temporaries` removes the temporary files that a killed process
(SIGKILL, power cut) left behind, once their writer is known to be gone.

:func:`check_output_dir` creates an output folder and proves that a file can be
created in it, so a read-only folder or a path below a file is reported before
any work is done.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "check_output_dir", "remove_stale_temporaries", "OutputError", "LOCATION_ERRNOS"]

#: errors that concern the whole output location (every later file would fail too)
LOCATION_ERRNOS = frozenset(e for e in (getattr(errno, n, None) for n in ("ENOSPC", "EDQUOT", "EROFS")) if e)


class OutputError(ValueError):
    """An output location that cannot be written (the message names it and says why)."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it to ``path``.

    ``tmp`` already exists (empty, with the mode a normal write would give:
    ``0o666 & ~umask``) and keeps ``path``'s suffix, so writers that look at the
    suffix (PIL, tifffile) behave as with ``path``; ``write`` may open it by name
    and truncate it. Missing parent folders are created. On any failure the
    temporary file is removed; an ``OSError`` is raised again naming ``path``
    (not the temporary name), with its ``errno`` kept. Returns ``path``.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.part{path.suffix}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename != str(path):
            # OSError(errno, ...) gives the matching subclass (PermissionError, ...)
            raise OSError(exc.errno, _reason(exc), str(path)) from exc
        raise
    return path


#: the writer of a temporary file: a tag of this machine's name and the process id
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_TMP_NAME = re.compile(r"^\..+\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}\.part(\.\w+)?$")
#: temporaries of earlier cellseg versions, which did not record their writer
_OLD_TMP_NAMES = (re.compile(r"^\..+\.[0-9a-f]{12}\.part(\.\w+)?$"),
                  re.compile(r"^\..+_(labels\.tif|objects\.csv|overlay\.png)\.\w{8}\.tmp(\.png)?$"))
#: a temporary file whose writer cannot be asked (another machine, an earlier version) is stale after
_STALE_AFTER_S = {"other host": 24 * 3600, "unknown writer": 3600}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or cannot tell): keep its file
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` in ``folder`` whose writer is gone.

    A killed process (SIGKILL, power cut) leaves its hidden temporary file
    ``.NAME.HOST-PID-XXXXXXXX.partSUFFIX`` behind. One written on this machine is
    removed when process PID no longer runs; one from another machine (a shared
    folder) when it is older than a day; those of earlier cellseg versions, which
    did not record their writer, when older than an hour. Files of running
    writers and all other files are left alone. Returns the removed paths; a file
    that cannot be removed is skipped.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        if not e.name.startswith(".") or not e.is_file(follow_symlinks=False):
            continue
        m = _TMP_NAME.match(e.name)
        try:
            if m is not None:
                stale = (not _alive(int(m["pid"])) if m["host"] == _HOST
                         else now - e.stat().st_mtime > _STALE_AFTER_S["other host"])
            elif any(r.match(e.name) for r in _OLD_TMP_NAMES):
                stale = now - e.stat().st_mtime > _STALE_AFTER_S["unknown writer"]
            else:
                continue
            if stale:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` (with its parents) and check that files can be created in it.

    Raises :class:`OutputError` naming the folder and the reason (it is a file, a
    path below a file, read-only, full...). Nothing is left behind in the folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"cannot create the {what} {path}: {parent} is a file, not a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the {what} {path}: {_reason(exc)}") from None
    probe = path / f".cellseg-write-test.{uuid.uuid4().hex[:12]}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise OutputError(f"cannot write to the {what} {path}: {_reason(exc)}") from None
    try:
        probe.unlink()
    except OSError:
        pass
    return path
