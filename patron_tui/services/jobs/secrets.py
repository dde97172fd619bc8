"""SFTP passwords and key passphrases, kept apart from the database.

One secret per job (the password for password login, the private key's passphrase for key
login), in a small JSON file that only the service user can read:

* where: `default_secret_store(db_path)` is `<db folder>/<db stem>.secrets`, beside the database
  it belongs to (so a second district database has its own secrets, and a backup of the
  `.db` alone carries none), never inside it;
* mode 0600, owned by the user running patron-tui; a file that group or others can read, or
  that someone else owns, is refused with a sentence saying what to run (`chmod 600 PATH`) —
  a secret that others could already read must be treated as known, so it is not silently
  "repaired" on read; `SecretStore.repair()` (or any `set`/`delete`) rewrites it 0600;
* written atomically: a temporary file in the same folder (created 0600), fsync, `os.replace`,
  fsync of the folder; a lock file serialises writers;
* a secret read back is a `Secret`, whose `repr`/`str` are masked, so an accidental log line,
  f-string or exception text shows `********`; `Secret.reveal()` is the only way to the text.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

MASK = "********"
FORMAT_VERSION = 1


def mask(secret: "str | Secret | None") -> str:
    """What the console shows for a secret: a fixed-length mask (the length is not shown
    either), or "" when there is none."""
    if secret is None:
        return ""
    text = secret.reveal() if isinstance(secret, Secret) else str(secret)
    return MASK if text else ""


class Secret:
    """A secret string whose repr and str are masked; `reveal()` gives the text."""

    __slots__ = ("_value",)

    def __init__(self, value: "str | Secret") -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("a secret is a string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):   # never pickled with its text (e.g. into a worker's traceback)
        raise TypeError("a Secret is not pickled")


def reveal(secret: "str | Secret | None") -> str | None:
    """The text of a secret given as a `Secret` or a plain string (None stays None)."""
    if secret is None:
        return None
    return secret.reveal() if isinstance(secret, Secret) else str(secret)


class SecretStoreError(RuntimeError):
    """The secret file cannot be used; the message says why and what to do (never a secret)."""


class SecretStore:
    """The secrets of one database's jobs: `get(job)`, `set(job, secret)`, `delete(job)`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"SecretStore({str(self.path)!r})"

    # reading -----------------------------------------------------------------------------
    def _check_mode(self, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise SecretStoreError(f"Secret file {self.path} is not a regular file; remove it and "
                                   "enter the SFTP passwords again.")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise SecretStoreError(
                f"Secret file {self.path} belongs to another user (uid {st.st_uid}); only the user "
                f"that runs patron-tui may own it: chown it to that user or remove it and enter "
                "the SFTP passwords again.")
        wide = stat.S_IMODE(st.st_mode) & 0o077
        if wide:
            raise SecretStoreError(
                f"Secret file {self.path} can be read by other users (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {self.path}` and change the "
                "SFTP passwords it holds, since others may have read them.")

    def _load(self) -> dict[str, str]:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SecretStoreError(f"Secret file {self.path} cannot be opened: "
                                   f"{exc.strerror or type(exc).__name__}.") from None
        with os.fdopen(fd, "rb") as fh:
            self._check_mode(os.fstat(fh.fileno()))
            raw = fh.read()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
            jobs = data["jobs"]
            if not isinstance(jobs, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in jobs.items()):
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            # no detail: a parser's message could quote part of the file
            raise SecretStoreError(f"Secret file {self.path} is damaged; remove it and enter the "
                                   "SFTP passwords again.") from None
        return dict(jobs)

    def get(self, job_name: str) -> Secret | None:
        """The job's password or key passphrase, or None when none is stored."""
        value = self._load().get(job_name)
        return None if value is None else Secret(value)

    def has(self, job_name: str) -> bool:
        return job_name in self._load()

    def names(self) -> list[str]:
        """The jobs that have a secret (names only)."""
        return sorted(self._load())

    def masked(self, job_name: str) -> str:
        """What the console shows for the job's secret: `********` or ""."""
        return mask(self.get(job_name))

    def check(self) -> None:
        """Raise SecretStoreError when the file exists but cannot be used safely."""
        self._load()

    # writing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            except ImportError:   # pragma: no cover - not POSIX
                pass
            yield
        finally:
            os.close(fd)

    def _write(self, jobs: dict[str, str]) -> None:
        data = json.dumps({"version": FORMAT_VERSION, "jobs": dict(sorted(jobs.items()))},
                          indent=1, ensure_ascii=False).encode("utf-8")
        atomic_write(self.path, data, mode=0o600)

    def _load_for_write(self) -> dict[str, str]:
        try:
            return self._load()
        except SecretStoreError:
            # a file with too wide a mode is still ours to rewrite 0600 (its secrets kept);
            # a damaged or foreign one is not overwritten silently
            st = self.path.lstat()
            if (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
                    and stat.S_IMODE(st.st_mode) & 0o077):
                os.chmod(self.path, 0o600)
                return self._load()
            raise

    def set(self, job_name: str, secret: "str | Secret | None") -> None:
        """Store (or, with None or "", remove) the job's password or key passphrase."""
        text = reveal(secret)
        with self._locked():
            jobs = self._load_for_write()
            if text:
                jobs[job_name] = text
            else:
                jobs.pop(job_name, None)
            self._write(jobs)

    def delete(self, job_name: str) -> bool:
        """Remove the job's secret; True when there was one."""
        with self._locked():
            jobs = self._load_for_write()
            had = jobs.pop(job_name, None) is not None
            if had or self.path.exists():
                self._write(jobs)
            return had

    def rename(self, old: str, new: str) -> None:
        """Carry a job's secret over to its new name."""
        with self._locked():
            jobs = self._load_for_write()
            if old in jobs:
                jobs[new] = jobs.pop(old)
                self._write(jobs)

    def repair(self) -> bool:
        """Make the file 0600 again (True when its mode was wider). The operator is still
        told to change the secrets it held: others may have read them."""
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise SecretStoreError(f"Secret file {self.path} is not a file of this user; remove it "
                                   "and enter the SFTP passwords again.")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(self.path, 0o600)
            return True
        return False


def atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    """Replace `path` with `data` whole or not at all: a temporary file in the same folder
    with `mode` from its first byte, synced, renamed over `path`, the folder synced."""
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:   # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:   # pragma: no cover - some file systems refuse a directory fsync
        pass
    finally:
        os.close(fd)


def secret_store_path(db_path: str | Path) -> Path:
    """`<db folder>/<db stem>.secrets`: beside the database, never in it."""
    db = Path(db_path).expanduser()
    return db.with_name(db.stem + ".secrets")


def default_secret_store(db_path: str | Path) -> SecretStore:
    """The secret store that belongs to the database at `db_path`."""
    return SecretStore(secret_store_path(db_path))
