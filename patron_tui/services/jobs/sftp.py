"""The SFTP source: Test Server and the nightly download, over paramiko.

* Host keys come from the project's own known_hosts file (`KnownHosts`, by default
  `<db folder>/<db stem>.known_hosts`, never ~/.ssh): an unknown host key is refused
  (`HostKeyUnknown`, carrying the key and its SHA256 fingerprint) until an operator accepts it
  (`KnownHosts.accept`, or `accept_host_key(job, fingerprint)` which checks that the server
  still shows the key the operator was shown); a changed key is always refused
  (`HostKeyChanged`) — the operator must `forget` the old key first, on purpose.
* Every step has a timeout: the TCP connect, the SSH banner, the handshake, the login, opening
  the SFTP channel, and the channel itself (`sftp.get_channel().settimeout`), so a stalled
  transfer ends the attempt instead of hanging a night's run.
* Connection errors (name not resolved, refused, timeout, a connection dropped mid-transfer)
  are retried with exponential backoff; a refused host key or login is not retried.
* A file whose size or modified time changes between two looks `settle_seconds` apart is
  left for the next run (`FileChanging`); the download goes to `<name>.part`, is checked
  against the remote size, fsynced and only then renamed to `<name>`.
* Every failure is an `SftpError` (a `SourceError`) whose text is a sentence an operator can
  act on. No text built here contains the password or passphrase, and paramiko's exceptions
  are never chained into ours (`raise ... from None`), so a traceback shows only our sentence.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import logging
import os
import posixpath
import socket
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import paramiko

from patron_tui.services.jobs.secrets import Secret, atomic_write, fsync_dir, reveal
from patron_tui.services.jobs.sources import SourceError, TestReport

if TYPE_CHECKING:
    from patron_tui.services.jobs.model import Job

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 20.0      # seconds, for each of connect, banner, handshake, login, channel
DEFAULT_ATTEMPTS = 3        # a night's run: three tries ...
DEFAULT_BACKOFF = 5.0       # ... 5 s, then 10 s apart
SETTLE_SECONDS = 10.0       # two looks at the file this far apart must agree
CHUNK = 32768
NAMES_SHOWN = 20


# --- errors -----------------------------------------------------------------------------------

class SftpError(SourceError):
    """An SFTP step failed. `str(exc)` is the operator's sentence (never a secret); `step` is
    the Test Server step (connect, host key, login, folder, file, transfer)."""

    retryable = False

    def __init__(self, sentence: str, *, step: str, detail: str = "") -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.step = step
        self.detail = detail

    def __reduce__(self):   # picklable whatever the subclass's __init__ (a host key stays behind)
        state = {k: v for k, v in self.__dict__.items() if k != "key"}
        return (_restore_error, (type(self), self.args, state))


def _restore_error(cls: type, args: tuple, state: dict) -> "SftpError":
    obj = Exception.__new__(cls)
    obj.args = args
    obj.__dict__.update(state)
    return obj


class ConnectError(SftpError):
    """Could not reach the server (retried): `reason` is dns, refused, timeout or network."""

    retryable = True

    def __init__(self, sentence: str, *, reason: str, detail: str = "") -> None:
        super().__init__(sentence, step="connect", detail=detail)
        self.reason = reason


class HandshakeError(SftpError):
    """The server answered but the SSH handshake failed (not retried)."""

    def __init__(self, sentence: str, detail: str = "") -> None:
        super().__init__(sentence, step="connect", detail=detail)


class HostKeyError(SftpError):
    """The server's host key is not the accepted one. `key` is the server's public key,
    `fingerprint` its SHA256 fingerprint."""

    def __init__(self, sentence: str, *, host: str, port: int, key: paramiko.PKey, detail: str) -> None:
        super().__init__(sentence, step="host key", detail=detail)
        self.host = host
        self.port = port
        self.key = key
        self.fingerprint = fingerprint(key)
        self.key_type = key.get_name()


class HostKeyUnknown(HostKeyError):
    """No key is accepted for this server yet: show `fingerprint`, offer to accept `key`."""


class HostKeyChanged(HostKeyError):
    """The server shows a different key than the accepted one: always refused."""

    def __init__(self, sentence: str, *, host: str, port: int, key: paramiko.PKey,
                 known: list[str], detail: str) -> None:
        super().__init__(sentence, host=host, port=port, key=key, detail=detail)
        self.known_fingerprints = known


class AuthError(SftpError):
    """The login was refused, or the key could not be used."""

    def __init__(self, sentence: str, detail: str = "") -> None:
        super().__init__(sentence, step="login", detail=detail)


class RemotePathError(SftpError):
    """The folder or the file is missing or cannot be read; `names` are what is there."""

    def __init__(self, sentence: str, *, step: str, names: list[str] | None = None, detail: str = "") -> None:
        super().__init__(sentence, step=step, detail=detail)
        self.names = names or []


class FileChanging(SftpError):
    """The file was still being written: left for the next run."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence, step="file")


class TransferError(SftpError):
    """The download was cut short or stalled (retried)."""

    retryable = True

    def __init__(self, sentence: str, detail: str = "") -> None:
        super().__init__(sentence, step="transfer", detail=detail)


# --- host keys --------------------------------------------------------------------------------

def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint: 'SHA256:' + unpadded base64 of the key blob's digest."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def host_entry(host: str, port: int) -> str:
    """The known_hosts name of a server: `host` on port 22, else `[host]:port`."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_path(db_path: str | Path) -> Path:
    """`<db folder>/<db stem>.known_hosts`: the project's own, beside the database."""
    db = Path(db_path).expanduser()
    return db.with_name(db.stem + ".known_hosts")


def _entry_matches(names: list[str], wanted: str) -> bool:
    for name in names:
        if name.startswith("|1|"):
            try:
                salt = name.split("|")[2]
            except IndexError:
                continue
            if paramiko.HostKeys.hash_host(wanted, salt) == name:
                return True
        elif name == wanted:
            return True
    return False


class KnownHosts:
    """The project's known_hosts file (OpenSSH format, plain or hashed names)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"KnownHosts({str(self.path)!r})"

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def keys(self, host: str, port: int = 22) -> list[paramiko.PKey]:
        """The accepted keys of a server (any key type)."""
        wanted = host_entry(host, port)
        out: list[paramiko.PKey] = []
        for line in self._lines():
            entry = _parse(line)
            if entry is not None and entry.key is not None and _entry_matches(entry.hostnames, wanted):
                out.append(entry.key)
        return out

    def fingerprints(self, host: str, port: int = 22) -> list[str]:
        return [fingerprint(k) for k in self.keys(host, port)]

    def check(self, host: str, port: int, key: paramiko.PKey) -> None:
        """Pass when `key` is accepted for the server; raise HostKeyUnknown / HostKeyChanged."""
        known = self.keys(host, port)
        fp = fingerprint(key)
        where = f"{host}:{port}"
        if not known:
            raise HostKeyUnknown(
                f"The server {where} is not known yet: its host key is {key.get_name()} {fp}. "
                "If that is the fingerprint the server's administrator gives you, accept it; "
                "until then the job refuses to connect.",
                host=host, port=port, key=key, detail=f"unknown host key; known_hosts file {self.path}")
        if any(k.get_name() == key.get_name() and k.asbytes() == key.asbytes() for k in known):
            return
        known_fps = [fingerprint(k) for k in known]
        raise HostKeyChanged(
            f"The host key of {where} has CHANGED: it is now {key.get_name()} {fp}, but "
            f"{', '.join(known_fps)} was accepted. Someone may be intercepting the connection, "
            "or the server was reinstalled: ask its administrator before removing the old key "
            f"from {self.path}.",
            host=host, port=port, key=key, known=known_fps,
            detail=f"changed host key; known_hosts file {self.path}")

    def accept(self, host: str, port: int, key: paramiko.PKey, *, replace: bool = False) -> str:
        """Add `key` as the server's accepted key; returns its fingerprint. A different key
        already accepted is kept (HostKeyChanged) unless `replace` is set on purpose."""
        known = self.keys(host, port)
        if any(k.asbytes() == key.asbytes() for k in known):
            return fingerprint(key)
        if known and not replace:
            self.check(host, port, key)   # raises HostKeyChanged
        lines = self._lines()
        if replace:
            wanted = host_entry(host, port)
            lines = [ln for ln in lines
                     if not ((e := _parse(ln)) is not None and _entry_matches(e.hostnames, wanted))]
        lines.append(f"{host_entry(host, port)} {key.get_name()} {key.get_base64()}")
        self._write(lines)
        return fingerprint(key)

    def forget(self, host: str, port: int = 22) -> int:
        """Remove every accepted key of the server; returns how many."""
        wanted = host_entry(host, port)
        lines = self._lines()
        kept = [ln for ln in lines if not ((e := _parse(ln)) is not None and _entry_matches(e.hostnames, wanted))]
        if len(kept) != len(lines):
            self._write(kept)
        return len(lines) - len(kept)

    def _write(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, "".join(ln + "\n" for ln in lines).encode("utf-8"), mode=0o644)


def _parse(line: str) -> paramiko.hostkeys.HostKeyEntry | None:
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    try:
        return paramiko.hostkeys.HostKeyEntry.from_line(line)
    except Exception:   # a line paramiko cannot read (an unsupported key type) is skipped
        return None


def _known_hosts(known_hosts: Any, known_hosts_path: Any, db_path: Any) -> KnownHosts:
    if isinstance(known_hosts, KnownHosts):
        return known_hosts
    if known_hosts is not None:
        return KnownHosts(known_hosts)
    if known_hosts_path is not None:
        return KnownHosts(known_hosts_path)
    if db_path is None:
        from patron_tui.config import default_db_path

        db_path = default_db_path()
    return KnownHosts(known_hosts_path_for(db_path))


known_hosts_path_for = known_hosts_path


# --- connecting -------------------------------------------------------------------------------

@dataclass
class SftpSession:
    """A logged-in SFTP session: `sftp` (channel timeout set), the server's `fingerprint`."""

    transport: paramiko.Transport
    sftp: paramiko.SFTPClient
    host: str
    port: int
    fingerprint: str
    timeout: float
    home: str = field(default="/")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sftp.close()
        with contextlib.suppress(Exception):
            self.transport.close()

    def __enter__(self) -> "SftpSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _where(job: "Job") -> str:
    return f"{job.sftp_host}:{job.sftp_port}"


def _resolve(host: str, port: int, timeout: float) -> list:
    """getaddrinfo, which has no timeout of its own, in a helper thread we stop waiting for."""
    import threading

    box: dict[str, Any] = {}

    def look() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:   # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=look, name="sftp-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError("name lookup")
    if "error" in box:
        raise box["error"]
    return box["infos"]


def _tcp_connect(job: "Job", timeout: float) -> socket.socket:
    host, port, where = job.sftp_host, job.sftp_port, _where(job)
    try:
        infos = _resolve(host, port, timeout)
    except socket.gaierror as exc:
        raise ConnectError(
            f"The server name {host!r} could not be resolved: check the spelling of the SFTP URL "
            "and that this server can look up names (DNS).",
            reason="dns", detail=f"getaddrinfo: {exc.strerror or exc.errno}") from None
    except TimeoutError:
        raise ConnectError(
            f"Looking up the server name {host!r} took longer than {timeout:g} s: this server's "
            "name service (DNS) is not answering.", reason="dns", detail="getaddrinfo timeout") from None
    last: OSError | None = None
    for family, kind, proto, _canon, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    exc = last
    if isinstance(exc, ConnectionRefusedError):
        raise ConnectError(
            f"{where} refused the connection: no SFTP server listens on port {port} there. "
            "Check the port and that the server's SSH service is running.",
            reason="refused", detail="ECONNREFUSED") from None
    if isinstance(exc, (socket.timeout, TimeoutError)) or getattr(exc, "errno", None) == errno.ETIMEDOUT:
        raise ConnectError(
            f"Connecting to {where} timed out after {timeout:g} s: a firewall may be dropping the "
            "connection, or the server is down.",
            reason="timeout", detail="connect timeout") from None
    text = (getattr(exc, "strerror", None) or type(exc).__name__) if exc else "no address"
    raise ConnectError(
        f"{where} cannot be reached ({text}): check the network between this server and it.",
        reason="network", detail=text) from None


def _start(job: "Job", known: KnownHosts, timeout: float) -> paramiko.Transport:
    """TCP, banner and handshake: a transport whose server key is not checked yet."""
    sock = _tcp_connect(job, timeout)
    where = _where(job)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    transport.handshake_timeout = timeout
    transport.auth_timeout = timeout
    transport.channel_timeout = timeout
    # prefer the key type already accepted (else the server may show another of its keys)
    accepted = known.keys(job.sftp_host, job.sftp_port)
    if accepted:
        opts = transport.get_security_options()
        want = accepted[0].get_name()
        if want == "ssh-rsa":
            want = next((t for t in ("rsa-sha2-512", "rsa-sha2-256") if t in opts.key_types), want)
        if want in opts.key_types:
            opts.key_types = [want] + [t for t in opts.key_types if t != want]
    try:
        transport.start_client(timeout=timeout)
    except paramiko.ssh_exception.IncompatiblePeer:
        transport.close()
        raise HandshakeError(
            f"{where} and this server share no encryption method; ask the server's administrator "
            "which SSH algorithms it allows.", detail="no common algorithm") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        text = str(exc).lower() if isinstance(exc, paramiko.SSHException) else ""
        if ("banner" in text or "timeout" in text or "timed out" in text
                or isinstance(exc, (socket.timeout, TimeoutError))):
            raise ConnectError(
                f"{where} accepted the connection but did not answer as an SSH server within "
                f"{timeout:g} s: check that this is the SFTP port and that the server is not overloaded.",
                reason="timeout", detail="banner or handshake timeout") from None
        raise ConnectError(
            f"{where} closed the connection during the SSH handshake: the server may limit who "
            "may connect, or be restarting.", reason="network", detail=type(exc).__name__) from None
    # start_client returns quietly when its timeout passes mid-handshake: check it finished
    if not transport.is_active() or getattr(transport, "host_key", None) is None:
        transport.close()
        raise ConnectError(
            f"{where} accepted the connection but did not complete the SSH handshake within "
            f"{timeout:g} s: check that this is the SFTP port and that the server is not overloaded.",
            reason="timeout", detail="handshake timeout")
    return transport


def _load_key(job: "Job", passphrase: str | None) -> paramiko.PKey:
    path = Path(job.sftp_key_path).expanduser()
    try:
        # positional: paramiko 3.x calls it `passphrase`, 5.x `password`
        return paramiko.PKey.from_path(path, passphrase.encode("utf-8") if passphrase else None)
    except FileNotFoundError:
        raise AuthError(f"The private key file {path} does not exist: check the job's key file.") from None
    except PermissionError:
        raise AuthError(f"The private key file {path} cannot be read by this user (permission "
                        "denied): make it readable by the user that runs patron-tui, and no one else.") from None
    except (paramiko.PasswordRequiredException, TypeError) as exc:
        # cryptography says TypeError for "the key is encrypted and no password was given"
        if passphrase and not isinstance(exc, paramiko.PasswordRequiredException):
            raise AuthError(f"The private key file {path} is not a private key paramiko can read "
                            "(OpenSSH or PEM format, RSA, ECDSA or Ed25519).", detail="TypeError") from None
        raise AuthError(f"The private key {path} is protected by a passphrase: enter it in the "
                        "job's password field.") from None
    except (paramiko.SSHException, ValueError, OSError) as exc:
        if passphrase:
            raise AuthError(f"The private key {path} could not be opened: the passphrase is wrong, or "
                            "the file is not an OpenSSH or PEM private key.",
                            detail=type(exc).__name__) from None
        raise AuthError(f"The private key file {path} is not a private key paramiko can read "
                        "(OpenSSH or PEM format, RSA, ECDSA or Ed25519).", detail=type(exc).__name__) from None


def _login(job: "Job", transport: paramiko.Transport, secret: "str | Secret | None") -> str:
    """Log in; returns how (for the report)."""
    where, user = _where(job), job.sftp_user
    text = reveal(secret)
    try:
        if job.sftp_auth == "key":
            key = _load_key(job, text)
            transport.auth_publickey(user, key)
            return f"with the key {Path(job.sftp_key_path).expanduser()} ({fingerprint(key)})"
        if not text:
            raise AuthError(f"No password is stored for this job: enter the password of {user!r} "
                            "in the job's password field.")
        transport.auth_password(user, text)
        return "with the password"
    except paramiko.BadAuthenticationType as exc:
        allowed = ", ".join(exc.allowed_types) or "none"
        how = "password" if job.sftp_auth == "password" else "key"
        raise AuthError(f"{where} does not accept {how} login for {user!r} (it accepts: {allowed}); "
                        "switch the job's authentication, or ask the server's administrator.",
                        detail="bad authentication type") from None
    except paramiko.AuthenticationException:
        if job.sftp_auth == "key":
            raise AuthError(f"{where} refused the key for user {user!r}: check the user name (it is "
                            "case-sensitive) and that the key's public half is in that user's "
                            "authorized_keys on the server.", detail="publickey refused") from None
        raise AuthError(f"{where} refused the password for user {user!r}: check the user name (it is "
                        "case-sensitive) and enter the password again.", detail="password refused") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ConnectError(f"{where} closed the connection during the login: try again later, or ask "
                           "the server's administrator whether it limits logins.",
                           reason="network", detail=type(exc).__name__) from None


def _open_sftp(job: "Job", transport: paramiko.Transport, timeout: float) -> paramiko.SFTPClient:
    try:
        sftp = paramiko.SFTPClient.from_transport(transport)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise HandshakeError(f"Logged in to {_where(job)}, but it did not open an SFTP session: the "
                             "account may be limited to a shell, or the server has no SFTP subsystem.",
                             detail=type(exc).__name__) from None
    if sftp is None:   # pragma: no cover - paramiko returns None only on a closed transport
        raise HandshakeError(f"{_where(job)} closed the SFTP session at once.")
    sftp.get_channel().settimeout(timeout)   # a stalled read or write ends the attempt
    return sftp


def connect(job: "Job", secret: "str | Secret | None", *, known_hosts: Any = None,
            known_hosts_path: Any = None, db_path: Any = None,
            timeout: float = DEFAULT_TIMEOUT) -> SftpSession:
    """Connect, check the host key, log in and open SFTP (one attempt)."""
    known = _known_hosts(known_hosts, known_hosts_path, db_path)
    transport = _start(job, known, timeout)
    try:
        key = transport.get_remote_server_key()
        known.check(job.sftp_host, job.sftp_port, key)
        _login(job, transport, secret)
        sftp = _open_sftp(job, transport, timeout)
        try:
            home = sftp.normalize(".")
        except OSError:
            home = "/"
        return SftpSession(transport, sftp, job.sftp_host, job.sftp_port, fingerprint(key), timeout, home)
    except BaseException:
        transport.close()
        raise


def with_retries(action: Callable[[], Any], *, attempts: int = DEFAULT_ATTEMPTS,
                 backoff: float = DEFAULT_BACKOFF, sleep: Callable[[float], None] = time.sleep,
                 on_retry: Callable[[SftpError, float], None] | None = None) -> Any:
    """Run `action`, again after `backoff`, 2*`backoff`, ... seconds while it raises a
    retryable SftpError (connection, transfer); anything else is raised at once."""
    attempts = max(1, attempts)
    for n in range(attempts):
        try:
            return action()
        except SftpError as exc:
            if not exc.retryable or n == attempts - 1:
                if n:
                    exc.detail = (exc.detail + "; " if exc.detail else "") + f"after {n + 1} attempts"
                raise
            delay = backoff * (2 ** n)
            log.info("SFTP attempt %d failed (%s); trying again in %g s", n + 1, exc.sentence, delay)
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")   # pragma: no cover


def scan_host_key(job: "Job", *, timeout: float = DEFAULT_TIMEOUT) -> paramiko.PKey:
    """The server's host key, without logging in (for showing and accepting it)."""
    transport = _start(job, KnownHosts(os.devnull), timeout)
    try:
        return transport.get_remote_server_key()
    finally:
        transport.close()


def accept_host_key(job: "Job", expected_fingerprint: str, *, known_hosts: Any = None,
                    known_hosts_path: Any = None, db_path: Any = None,
                    timeout: float = DEFAULT_TIMEOUT) -> str:
    """Accept the server's host key, but only if it still has the fingerprint the operator
    was shown (so a key swapped in between is not accepted). Returns the fingerprint."""
    known = _known_hosts(known_hosts, known_hosts_path, db_path)
    key = scan_host_key(job, timeout=timeout)
    fp = fingerprint(key)
    if fp != expected_fingerprint.strip():
        raise HostKeyChanged(
            f"{_where(job)} now shows the host key {fp}, not the {expected_fingerprint.strip()} you "
            "were shown: nothing was accepted. Run Test Server again and compare with the "
            "fingerprint from the server's administrator.",
            host=job.sftp_host, port=job.sftp_port, key=key, known=[expected_fingerprint.strip()],
            detail="fingerprint differs from the one shown")
    return known.accept(job.sftp_host, job.sftp_port, key)


# --- remote folder and file -------------------------------------------------------------------

def _names_text(names: list[str]) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(f'"{n}"' for n in names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _listing(sftp: paramiko.SFTPClient, folder: str) -> list[str]:
    """Names in a folder, folders marked with a trailing '/', sorted case-insensitively."""
    out = []
    for attr in sftp.listdir_attr(folder):
        name = attr.filename
        if name in (".", ".."):
            continue
        if attr.st_mode is not None and stat.S_ISDIR(attr.st_mode):
            name += "/"
        out.append(name)
    return sorted(out, key=lambda n: (n.lower(), n))


def _same_but_case(wanted: str, names: list[str]) -> str | None:
    for n in names:
        if n.rstrip("/").lower() == wanted.lower() and n.rstrip("/") != wanted:
            return n.rstrip("/")
    return None


def _is_missing(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT


def _is_denied(exc: OSError) -> bool:
    return isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM)


def resolve_folder(session: SftpSession, job: "Job") -> str:
    """The job's folder on the server, checked: absolute as written; `/~/...` (or, when the
    absolute folder does not exist, the same path under the login folder) relative to the
    login folder. Raises RemotePathError with the names that are there."""
    sftp, where, user = session.sftp, _where(job), job.sftp_user
    folder = job.sftp_folder or "/"
    if folder == "/~" or folder.startswith("/~/"):
        folder = posixpath.normpath(posixpath.join(session.home, folder[3:])) if folder != "/~" else session.home
    candidates = [folder]
    if folder != "/" and session.home not in ("/", ""):
        alt = posixpath.normpath(posixpath.join(session.home, folder.lstrip("/")))
        if alt != folder:
            candidates.append(alt)
    for candidate in candidates:
        try:
            attr = sftp.stat(candidate)
        except OSError as exc:
            if _is_missing(exc):
                continue
            if _is_denied(exc):
                raise RemotePathError(f"User {user!r} may not open the folder {candidate} on {where} "
                                      "(permission denied): ask the server's administrator for read access.",
                                      step="folder", detail="EACCES") from None
            raise _io_error(exc, where, f"the folder {candidate}", step="folder") from None
        if attr.st_mode is not None and not stat.S_ISDIR(attr.st_mode):
            raise RemotePathError(f"{candidate} on {where} is a file, not a folder: the SFTP URL names "
                                  "the folder; the file's name goes in the file name field.", step="folder")
        try:
            sftp.listdir(candidate)
        except OSError as exc:
            if _is_denied(exc):
                raise RemotePathError(f"User {user!r} may not list the folder {candidate} on {where} "
                                      "(permission denied): ask the server's administrator for read access.",
                                      step="folder", detail="EACCES") from None
            raise _io_error(exc, where, f"the folder {candidate}", step="folder") from None
        return candidate
    # missing: name what the nearest existing folder holds
    parent = posixpath.dirname(folder.rstrip("/")) or "/"
    while True:
        try:
            names = _listing(sftp, parent)
            break
        except OSError as exc:
            if _is_missing(exc) and parent != "/":
                parent = posixpath.dirname(parent) or "/"
                continue
            names = None
            break
    base = f"The folder {folder} does not exist on {where}."
    if names is None:
        raise RemotePathError(base + f" Its parent {parent} cannot be listed either; check the SFTP URL "
                              "(names are case-sensitive).", step="folder")
    child = folder[len(parent):].strip("/").split("/")[0] if folder.startswith(parent) else ""
    hint = _same_but_case(child, names) if child else None
    folders = [n for n in names if n.endswith("/")]
    sentence = (base + f" {parent} holds the folders {_names_text(folders)}"
                + (f" (and {len(names) - len(folders)} files)" if len(names) > len(folders) else "")
                + ". SFTP names are case-sensitive")
    sentence += (f": did you mean {posixpath.join(parent, hint)}?" if hint else "; correct the SFTP URL.")
    raise RemotePathError(sentence, step="folder", names=names)


def stat_file(session: SftpSession, job: "Job", folder: str) -> tuple[str, paramiko.SFTPAttributes]:
    """The file's path and attributes; RemotePathError names the files that are there."""
    sftp, where, user = session.sftp, _where(job), job.sftp_user
    name = job.file_name
    if name in ("", ".", ".."):
        raise RemotePathError("The job's file name is not a file name.", step="file")
    path = posixpath.join(folder, name)
    try:
        attr = sftp.stat(path)
    except OSError as exc:
        if _is_denied(exc):
            raise RemotePathError(f"User {user!r} may not read {path} on {where} (permission denied): "
                                  "ask the server's administrator for read access.",
                                  step="file", detail="EACCES") from None
        if not _is_missing(exc):
            raise _io_error(exc, where, path, step="file") from None
        try:
            names = _listing(sftp, folder)
        except OSError:
            names = []
        files = [n for n in names if not n.endswith("/")]
        hint = _same_but_case(name, files)
        sentence = (f"The file {name!r} is not in {folder} on {where}. The folder holds "
                    f"{_names_text(files) if files else 'no files'}. File names are case-sensitive")
        sentence += f": did you mean {hint!r}?" if hint else "; correct the file name."
        raise RemotePathError(sentence, step="file", names=names) from None
    if attr.st_mode is not None and stat.S_ISDIR(attr.st_mode):
        raise RemotePathError(f"{path} on {where} is a folder, not a file.", step="file")
    return path, attr


def _io_error(exc: OSError, where: str, what: str, *, step: str) -> SftpError:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TransferError(f"{where} stopped answering while reading {what} (no reply within the "
                             "timeout); the attempt was abandoned.", detail="channel timeout")
    text = exc.strerror or type(exc).__name__
    return RemotePathError(f"{where} could not read {what}: {text}.", step=step, detail=text)


def _when(mtime: int | float | None) -> str:
    if mtime is None:
        return "unknown"
    return datetime.fromtimestamp(mtime, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- Test Server ------------------------------------------------------------------------------

def test_sftp(job: "Job", secret: "str | Secret | None", *, known_hosts: Any = None,
              known_hosts_path: Any = None, db_path: Any = None,
              timeout: float = DEFAULT_TIMEOUT) -> TestReport:
    """Test Server: connect, host key (fingerprint), login, folder, file (size, modified time).
    Stops at the first failing step; every check's sentence says what to do. One attempt."""
    report = TestReport()
    known = _known_hosts(known_hosts, known_hosts_path, db_path)
    where = _where(job)
    try:
        transport = _start(job, known, timeout)
    except SftpError as exc:
        report.add(exc.step, False, exc.sentence, exc.detail)
        return report
    try:
        report.add("connect", True, f"Connected to {where}: an SSH server answered "
                   f"({transport.remote_version}).")
        key = transport.get_remote_server_key()
        report.fingerprint = fingerprint(key)
        try:
            known.check(job.sftp_host, job.sftp_port, key)
        except HostKeyError as exc:
            report.add("host key", False, exc.sentence, exc.detail)
            return report
        report.add("host key", True, f"The host key of {where} is the accepted one: {key.get_name()} "
                   f"{report.fingerprint}.")
        try:
            how = _login(job, transport, secret)
            sftp = _open_sftp(job, transport, timeout)
        except SftpError as exc:
            report.add("login", False, exc.sentence, exc.detail)
            return report
        report.add("login", True, f"Logged in to {where} as {job.sftp_user!r} {how}.")
        try:
            home = sftp.normalize(".")
        except OSError:
            home = "/"
        session = SftpSession(transport, sftp, job.sftp_host, job.sftp_port, report.fingerprint, timeout, home)
        try:
            folder = resolve_folder(session, job)
        except SftpError as exc:
            report.add("folder", False, exc.sentence, exc.detail)
            return report
        report.add("folder", True, f"The folder {folder} exists and can be listed.")
        try:
            path, attr = stat_file(session, job, folder)
            with sftp.open(path, "rb") as fh:   # readable, not only listed
                fh.read(1)
        except SftpError as exc:
            report.add("file", False, exc.sentence, exc.detail)
            return report
        except OSError as exc:
            err = (RemotePathError(f"User {job.sftp_user!r} may not read {path} on {where} (permission "
                                   "denied): ask the server's administrator for read access.",
                                   step="file", detail="EACCES")
                   if _is_denied(exc) else _io_error(exc, where, path, step="file"))
            report.add("file", False, err.sentence, err.detail)
            return report
        size = attr.st_size or 0
        if size == 0:
            report.add("file", False, f"{path} is empty (0 bytes, modified {_when(attr.st_mtime)}): a run "
                       "now would import no one.", f"size=0 mtime={attr.st_mtime}")
        else:
            report.add("file", True, f"{path} is there: {size:,} bytes, modified {_when(attr.st_mtime)}.",
                       f"size={size} mtime={attr.st_mtime}")
        return report
    except (paramiko.SSHException, EOFError, OSError) as exc:
        report.add("connect", False, f"The connection to {where} was lost during the test: try again.",
                   type(exc).__name__)
        return report
    finally:
        transport.close()


test_sftp.__test__ = False   # type: ignore[attr-defined]  # not a pytest test


# --- the download -----------------------------------------------------------------------------

def _fetch_once(job: "Job", secret: "str | Secret | None", dest_dir: Path, known: KnownHosts,
                timeout: float, settle_seconds: float, sleep: Callable[[float], None]) -> Path:
    where = _where(job)
    with connect(job, secret, known_hosts=known, timeout=timeout) as session:
        sftp = session.sftp
        folder = resolve_folder(session, job)
        path, first = stat_file(session, job, folder)
        if settle_seconds > 0:
            sleep(settle_seconds)
        try:
            second = sftp.stat(path)
        except OSError as exc:
            if _is_missing(exc):
                raise FileChanging(f"{path} on {where} disappeared while it was checked; it is left "
                                   "for the next run.") from None
            raise _io_error(exc, where, path, step="file") from None
        if (first.st_size, first.st_mtime) != (second.st_size, second.st_mtime):
            raise FileChanging(
                f"{path} on {where} is still changing (size {first.st_size:,} -> {second.st_size:,} "
                f"bytes, modified {_when(first.st_mtime)} -> {_when(second.st_mtime)}, "
                f"{settle_seconds:g} s apart): it is left for the next run.")
        expected = second.st_size or 0
        dest_dir.mkdir(parents=True, exist_ok=True)
        final = dest_dir / job.file_name
        part = dest_dir / (job.file_name + ".part")
        got = 0
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                try:
                    with sftp.open(path, "rb") as remote:
                        remote.settimeout(timeout)
                        if expected:
                            remote.prefetch(expected)
                        while True:
                            chunk = remote.read(CHUNK)
                            if not chunk:
                                break
                            out.write(chunk)
                            got += len(chunk)
                except (socket.timeout, TimeoutError):
                    raise TransferError(f"The transfer of {path} from {where} stalled (nothing for "
                                        f"{timeout:g} s after {got:,} of {expected:,} bytes).",
                                        detail="channel timeout") from None
                except PermissionError:
                    raise RemotePathError(f"User {job.sftp_user!r} may not read {path} on {where} "
                                          "(permission denied): ask the server's administrator for "
                                          "read access.", step="file", detail="EACCES") from None
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                        raise SftpError(f"The file could not be saved in {dest_dir}: "
                                        f"{exc.strerror}.", step="transfer") from None
                    raise TransferError(f"The connection to {where} was lost after {got:,} of "
                                        f"{expected:,} bytes of {path}.", detail=type(exc).__name__) from None
                out.flush()
                os.fsync(out.fileno())
            if got != expected:
                raise FileChanging(f"{path} on {where} changed during the download ({got:,} bytes "
                                   f"read, {expected:,} expected): it is left for the next run.")
            try:
                after = sftp.stat(path)
            except OSError:
                after = second
            if (after.st_size, after.st_mtime) != (second.st_size, second.st_mtime):
                raise FileChanging(f"{path} on {where} changed during the download: it is left for "
                                   "the next run.")
            if second.st_mtime is not None:
                os.utime(part, (second.st_mtime, second.st_mtime))
            os.replace(part, final)
        except BaseException:
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        fsync_dir(dest_dir)
        log.info("SFTP: %s from %s saved as %s (%d bytes)", path, where, final, got)
        return final


def fetch_sftp(job: "Job", secret: "str | Secret | None", dest_dir: str | Path, *,
               known_hosts: Any = None, known_hosts_path: Any = None, db_path: Any = None,
               timeout: float = DEFAULT_TIMEOUT, settle_seconds: float | None = None,
               attempts: int = DEFAULT_ATTEMPTS, backoff: float = DEFAULT_BACKOFF,
               sleep: Callable[[float], None] = time.sleep,
               on_retry: Callable[[SftpError, float], None] | None = None) -> Path:
    """Download the job's file into `dest_dir` (as `<file name>`, via `<file name>.part`) and
    return its path. `settle_seconds` None is SETTLE_SECONDS. Connection errors and stalled transfers are retried `attempts` times with
    exponential backoff; the other SftpErrors (host key, login, missing file, a file still
    changing: `FileChanging`) are raised at once."""
    known = _known_hosts(known_hosts, known_hosts_path, db_path)
    dest = Path(dest_dir)
    settle = SETTLE_SECONDS if settle_seconds is None else settle_seconds
    return with_retries(lambda: _fetch_once(job, secret, dest, known, timeout, settle, sleep),
                        attempts=attempts, backoff=backoff, sleep=sleep, on_retry=on_retry)




@contextlib.contextmanager
def session(job: "Job", secret: "str | Secret | None", **kw: Any) -> Iterator[SftpSession]:
    """`with session(job, secret, known_hosts=...) as s:` a logged-in SFTP session (one attempt)."""
    s = connect(job, secret, **kw)
    try:
        yield s
    finally:
        s.close()
