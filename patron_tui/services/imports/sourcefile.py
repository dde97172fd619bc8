"""The patron CSV file itself: what a path is, opening it, and noticing that it changed.

One place for every reader of patron files (the import's `RowReader`, the mapping process,
the converter's `sniff`, the CLI, the Import and Import Converter screens, the directory job
source), so that each says the same true sentence:

- `describe(path)`: None for a regular file, else what the path is instead ("is a directory",
  "is a symbolic link loop", "is not a regular file (a FIFO)", "no such file", ...). It only
  looks (stat), never opens, so a FIFO never blocks it.
- `open_source(path)`: the file opened for reading (non-blocking open, so a FIFO swapped in
  after the look cannot hang the run) and its `Identity` (size, mtime in ns, device, inode)
  taken from the open file; `SourceFileError` with the sentence otherwise.
- `change(path, before, fd=None)`: None while the path (and the open file) still has the
  identity it had when reading began, else the sentence saying what changed. Checks are per
  file (a stat or two), never per line.
- `check_head(name, sample, unit)`: a file that starts with NUL bytes (a sparse or unfinished
  file) is refused from its first block, without reading the rest.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from patron_tui.services.imports.records import ImportFileError

RUN_AGAIN = "nothing was imported. Run it again when the file is complete."


class SourceFileError(ImportFileError):
    """The path is not a readable regular file, or the file changed while it was read."""

    def __init__(self, path: str, message: str, *, code: str) -> None:
        super().__init__(path, None, message, code=code)


@dataclass(frozen=True, slots=True)
class Identity:
    size: int
    mtime_ns: int
    dev: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> Identity:
        return cls(st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _kind(mode: int) -> str | None:
    """None for a regular file, else what the mode says the path is."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a CSV file"
    for test, what in _KINDS:
        if test(mode):
            return f"is not a regular file ({what})"
    return "is not a regular file"


def _oserror(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link loop (following its links never reaches a file)"
    if exc.errno == errno.ENOENT:
        if os.path.islink(path):
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        return "no such file"
    if exc.errno == errno.ENOTDIR:
        return "no such file (a part of its path is not a directory)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (this login may not read it)"
    return f"cannot be read ({exc.strerror or exc})"


def describe(path: str | Path) -> str | None:
    """None when `path` is a regular file (after its symbolic links), else what it is, as the
    end of a sentence that starts with the path ("is a directory, not a CSV file")."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        return _oserror(path, exc)
    return _kind(st.st_mode)


def refusal(path: str | Path) -> str | None:
    """`describe` as a whole sentence naming the path ("x.csv: is a directory, not a CSV
    file"), or None for a regular file."""
    what = describe(path)
    return None if what is None else f"{path}: {what}"


def open_source(path: str | Path) -> tuple[BinaryIO, Identity]:
    """`path` opened for reading in binary, and its identity from the open file. The open
    never blocks (O_NONBLOCK: a FIFO gets a sentence, not a hang)."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise SourceFileError(str(path), _oserror(path, exc), code="not_a_file") from None
    try:
        st = os.fstat(fd)
        what = _kind(st.st_mode)
        if what is not None:
            raise SourceFileError(str(path), what, code="not_a_file")
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), Identity.of(st)
    except BaseException:
        os.close(fd)
        raise


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S.%f")[:-3]


def _difference(before: Identity, after: Identity) -> str:
    if (after.dev, after.ino) != (before.dev, before.ino):
        return "it was replaced by another file"
    if after.size != before.size:
        return f"size {before.size:,} → {after.size:,} bytes"
    return f"modified at {_when(before.mtime_ns)} → {_when(after.mtime_ns)}, size {after.size:,} bytes"


def change(path: str | Path, before: Identity, fd: int | None = None) -> str | None:
    """None when `path` (and the open file `fd`, when given) is as it was when reading began,
    else what changed, as the rest of a sentence that starts with the path: "changed while it
    was read (size 1,234,567 → 800,000 bytes); nothing was imported. Run it again ..."."""
    now: Identity | None = None
    if fd is not None:
        try:
            now = Identity.of(os.fstat(fd))
        except OSError:
            now = None
    if now is None or now == before:
        try:
            now = Identity.of(os.stat(path))
        except OSError as exc:
            gone = "was removed" if exc.errno == errno.ENOENT else _oserror(Path(path), exc)
            return f"changed while it was read (it {gone}); {RUN_AGAIN}"
    if now == before:
        return None
    return f"changed while it was read ({_difference(before, now)}); {RUN_AGAIN}"


def ensure_unchanged(path: str | Path, before: Identity, fd: int | None = None) -> None:
    """SourceFileError (code file_changed) naming the file and what changed, if it did."""
    what = change(path, before, fd)
    if what is not None:
        raise SourceFileError(str(path), what, code="file_changed")


def leading_nuls(sample: bytes, unit: int = 1) -> int:
    """How many NUL bytes `sample` starts with, counted only when they make at least one whole
    NUL character in a code unit of `unit` bytes (0 otherwise)."""
    n = len(sample) - len(sample.lstrip(b"\x00"))
    return n if n >= unit else 0


def check_head(name: str, sample: bytes, unit: int = 1) -> None:
    """ImportFileError when the file's first bytes (after any byte-order mark) are NUL: a
    sparse or unfinished file, not a text CSV. Only the sample is looked at."""
    n = leading_nuls(sample, unit)
    if n:
        span = (f"all of the first {n:,} bytes" if n == len(sample)
                else f"bytes 0 to {n - 1:,}")
        raise ImportFileError(
            name, None,
            f"starts with NUL bytes at byte offset 0 ({span} are NUL): not a text CSV file "
            "(a sparse or unfinished file?)",
            code="nul_start",
        )


__all__ = ["Identity", "SourceFileError", "change", "check_head", "describe", "ensure_unchanged",
           "leading_nuls", "open_source", "refusal"]
