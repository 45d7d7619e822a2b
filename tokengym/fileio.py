"""Atomic file and directory writes, with one permission policy for everything tokengym writes.

A reader (another process, a resumed run, a crash-recovery path) only ever sees the old file or
the new one, never a torn one: data goes to a temporary sibling, is flushed to disk, then renamed
over the target (``os.replace`` is atomic within one file system).

Permissions: every file and directory tokengym writes gets the mode an ordinary ``open()`` /
``mkdir()`` would give it under the process umask (usually 0644 / 0755). ``tempfile`` makes its
files 0600 and directories 0700, which would leave results private by accident.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; creates the parent directory."""
    return atomic_write_lines(path, [text])


def atomic_write_lines(path: str | os.PathLike[str], chunks: Iterable[str]) -> Path:
    """Write the concatenation of ``chunks`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON content of ``path``; ``ValueError`` naming the file and what is wrong with it
    (unreadable, not UTF-8, not JSON) instead of the library's own error."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is damaged or unreadable ({type(exc).__name__}: {exc})") from None


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 1,
                      sort_keys: bool = False) -> Path:
    """Write ``data`` as JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")


def atomic_write_jsonl(path: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    """Write one JSON object per line to ``path`` atomically."""
    return atomic_write_lines(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@contextmanager
def atomic_directory(target: str | os.PathLike[str], *, replace: bool = True
                     ) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then rename it to ``target``.

    Yields the temporary directory to fill. On success it is renamed into place; an existing
    ``target`` is replaced when ``replace`` (moved aside first, since a rename cannot go over a
    non-empty directory), else kept (another process finished first: theirs is used). On any
    error the temporary directory is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
        if target.exists() and replace:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / "prev")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.exists():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock (the message gives its pid)."""


_HELD: dict[Path, int] = {}  # run directories this process has locked -> nesting depth


@contextmanager
def run_lock(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive lock on run directory ``out`` (``out/.lock``) for the ``with`` block.

    Two writers in one run directory interleave ``metrics.jsonl`` and overwrite each other's
    checkpoints, so the second one is refused with :class:`RunLockedError` naming the holder's
    pid. The lock is the kernel's (``flock``): it goes away with the process however it ends
    (kill -9 included), so a lock file left behind by a dead process is never "stale". Re-entrant
    within one process.
    """
    path = Path(out).resolve()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    import fcntl  # POSIX only; imported here so that the module still imports elsewhere

    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(f"{path} is in use by another tokengym process (pid {holder}); "
                                 "wait for it to finish, or use another output directory") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[path] = 1
        try:
            yield path
        finally:
            del _HELD[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock
