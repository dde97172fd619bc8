"""Where a job's patron file comes from: a folder on this server or an SFTP server.

Both sources speak the same two words: `test_job(job)` checks every step and
returns a `TestReport` of `Check`s (what the console's "Test Server" shows and
`patron-tui jobs test` prints); `fetch(job, dest_dir)` delivers the file to
import and returns its path. Sentences name the job's field and never contain
a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patron_tui.services.jobs.model import Job


class SourceError(RuntimeError):
    """The job's file could not be fetched; the message is a sentence for the operator."""


@dataclass
class Check:
    """One step of a source test: what was checked, whether it passed, in a sentence."""

    step: str          # short name: "file", "properties", "connect", "host key", "login", ...
    ok: bool
    sentence: str      # for the operator: what was found, and what to do about it
    detail: str = ""   # optional technical detail (never a secret)


@dataclass
class TestReport:
    """Every check of one test, in order; `fingerprint` is the SFTP server's host key
    fingerprint (SHA256:...) when one was seen."""

    __test__ = False   # not a pytest test class

    checks: list[Check] = field(default_factory=list)
    fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, step: str, ok: bool, sentence: str, detail: str = "") -> Check:
        check = Check(step, ok, sentence, detail)
        self.checks.append(check)
        return check

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "fingerprint": self.fingerprint,
                "checks": [{"step": c.step, "ok": c.ok, "sentence": c.sentence, "detail": c.detail}
                           for c in self.checks]}


def check_properties(job: "Job") -> list[Check]:
    """The properties file exists and parses; the encoding (if set) is known."""
    from patron_tui.services.imports.properties import PropertiesError, load_properties

    path = Path(job.properties_path).expanduser()
    if not job.properties_path:
        return [Check("properties", False, "No properties file is set for this job.")]
    try:
        mapping = load_properties(path)
    except FileNotFoundError:
        return [Check("properties", False, f"Properties file {path} does not exist.")]
    except OSError as exc:
        return [Check("properties", False, f"Properties file {path} cannot be read: {exc.strerror or exc}.")]
    except PropertiesError as exc:
        return [Check("properties", False, f"Properties file {path} is not valid.", str(exc))]
    enc = job.encoding or mapping.encoding_label
    return [Check("properties", True, f"Properties file {path} is valid; the file is read as {enc}.")]


def test_job(job: "Job", store_paths: Any = None, *, properties: bool = True, **sftp_kw: Any) -> TestReport:
    """Check the job's source (Destiny's "Test Server"), then, unless `properties` is
    False, the properties file.

    `store_paths`: for SFTP, either a `SecretStore` or the database path (the
    secret store and known_hosts file beside it are used); `sftp_kw` goes to
    `test_sftp` (known_hosts_path, db_path, timeout)."""
    if job.source == "directory":
        from patron_tui.services.jobs.directory import check_directory

        report = TestReport(check_directory(job))
    else:
        from patron_tui.services.jobs import sftp  # helper module, imported only when needed

        secret = _secret_for(job, store_paths)
        if store_paths is not None and not hasattr(store_paths, "get"):
            sftp_kw.setdefault("db_path", store_paths)
        report = sftp.test_sftp(job, secret, **sftp_kw)
    if properties:
        report.checks.extend(check_properties(job))
    return report


test_job.__test__ = False   # type: ignore[attr-defined]  # a service, not a pytest test


def fetch(job: "Job", dest_dir: str | Path, *, secret_store: Any = None, **sftp_kw: Any) -> Path:
    """The job's file, ready to import (a directory file is copied into `dest_dir` once it is
    complete, an SFTP file is downloaded there). Raises SourceError with a sentence."""
    dest_dir = Path(dest_dir)
    if job.source == "directory":
        from patron_tui.services.jobs.directory import fetch_directory

        return fetch_directory(job, dest_dir)
    from patron_tui.services.jobs import sftp

    secret = _secret_for(job, secret_store)
    return sftp.fetch_sftp(job, secret, dest_dir, **sftp_kw)


def _secret_for(job: "Job", store_or_path: Any) -> str | None:
    """The job's SFTP password (None for key auth without a passphrase, or when unknown)."""
    if store_or_path is None:
        return None
    if hasattr(store_or_path, "get"):
        return store_or_path.get(job.name)
    from patron_tui.services.jobs.secrets import default_secret_store

    return default_secret_store(store_or_path).get(job.name)
