"""A real OpenSSH sshd on 127.0.0.1 for the SFTP tests.

`SshServer.start(folder)` writes a throwaway config (a free port, a fresh Ed25519 host key,
`AuthorizedKeysFile` pointing at a temporary file holding two client keys — one plain, one
protected by a passphrase —, `PasswordAuthentication yes`, `Subsystem sftp internal-sftp`,
`UsePAM no`, `StrictModes no`, the pid file in the temporary folder) and runs
`/usr/sbin/sshd -D -e -f CONFIG` until `stop()`.

* Key login is as the user running the tests (sshd not run as root can only log that user in).
* Password login needs a real account with a password sshd can check: as root, a throwaway
  account `ptui<pid><hex>` is created with `useradd` + `chpasswd` (home = the public folder) and
  removed with `userdel` at `stop()` (one left by a killed test process — its comment names
  the pid — is removed by the next start). Not as root, `password_user` is None.
* `public` is a folder every user can read (0755, under /tmp): put the files to serve there.

What it needs: the Debian package `openssh-server` (/usr/sbin/sshd; `make test` installs it
when it is missing and it runs as root) and `ssh-keygen` (openssh-client, its dependency).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

SSHD = Path("/usr/sbin/sshd")
PACKAGE = "openssh-server"
REQUIRE_ENV = "PATRON_TUI_REQUIRE_SSHD"
ACCOUNT_MARK = "patron-tui test sshd pid="   # the throwaway accounts' comment field


def missing_reason() -> str | None:
    """Why the real-sshd tests cannot run here, naming the package; None when they can."""
    if not SSHD.exists():
        return (f"{SSHD} is missing: install the Debian package {PACKAGE} "
                f"(`apt-get install {PACKAGE}`; `make test` does it when run as root)")
    if shutil.which("ssh-keygen") is None:
        return f"ssh-keygen is missing: install the Debian package openssh-client (with {PACKAGE})"
    return None


def required() -> bool:
    """CI sets PATRON_TUI_REQUIRE_SSHD=1: a skip for want of sshd becomes a failure."""
    return os.environ.get(REQUIRE_ENV, "").strip() not in ("", "0", "no", "false")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, passphrase: str = "", comment: str = "patron-tui-test") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return path


def ssh_keygen_fingerprint(pub: Path) -> str:
    """OpenSSH's own SHA256 fingerprint of a public key file (to check ours against)."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


def _account_tool(argv: list[str], stdin: str | None = None, tries: int = 50) -> None:
    """useradd / chpasswd / userdel, again while another test process holds /etc/passwd's
    lock (two xdist workers start their servers at the same moment)."""
    for n in range(tries):
        done = subprocess.run(argv, input=stdin if stdin is not None else "", text=True, capture_output=True)
        if done.returncode == 0:
            return
        if "lock" not in (done.stderr or "").lower() or n == tries - 1:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")
        time.sleep(0.1)


def _remove_stale_accounts() -> None:
    """Throwaway accounts left by a test process that was killed (its pid is gone)."""
    for entry in pwd.getpwall():
        if not entry.pw_gecos.startswith(ACCOUNT_MARK):
            continue
        try:
            pid = int(entry.pw_gecos[len(ACCOUNT_MARK):])
            os.kill(pid, 0)
            continue   # its process still runs
        except ProcessLookupError:
            pass
        except (ValueError, PermissionError):
            continue
        with contextlib.suppress(RuntimeError):
            _account_tool(["userdel", "--force", entry.pw_name])


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        ppid = int(raw.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class SshServer:
    folder: Path                 # private: config, host key, log
    public: Path                 # readable by every user: served files, authorized_keys
    port: int
    host: str = "127.0.0.1"
    host_key: Path = field(default=Path())
    client_key: Path = field(default=Path())
    passphrase_key: Path = field(default=Path())
    passphrase: str = ""
    key_user: str = ""
    password_user: str | None = None
    password: str | None = None
    log_path: Path = field(default=Path())
    proc: subprocess.Popen | None = None
    _created_user: bool = False

    @property
    def host_pub(self) -> Path:
        return self.host_key.with_name(self.host_key.name + ".pub")

    # ---------------------------------------------------------------------------------------
    @classmethod
    def start(cls, folder: Path) -> "SshServer":
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        folder.mkdir(parents=True, exist_ok=True)
        public = Path(tempfile.mkdtemp(prefix="patron-tui-sftp-"))
        os.chmod(public, 0o755)
        server = cls(folder=folder, public=public, port=0)
        try:
            server._prepare()
            server._launch()
        except BaseException:
            server.stop()
            raise
        return server

    def _prepare(self) -> None:
        self.key_user = pwd.getpwuid(os.getuid()).pw_name
        self.host_key = keygen(self.folder / "ssh_host_ed25519_key", comment="patron-tui-test-host")
        self.client_key = keygen(self.folder / "client_key")
        self.passphrase = "pp-" + secrets.token_hex(6)
        self.passphrase_key = keygen(self.folder / "client_key_pp", passphrase=self.passphrase)
        keys_dir = self.public / ".ssh-test"
        keys_dir.mkdir(mode=0o755)
        self.authorized_keys = keys_dir / "authorized_keys"
        self.authorized_keys.write_text(
            (self.folder / "client_key.pub").read_text() + (self.folder / "client_key_pp.pub").read_text())
        os.chmod(self.authorized_keys, 0o644)
        self.log_path = self.folder / "sshd.log"
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)   # privilege separation
            if shutil.which("useradd") and shutil.which("chpasswd"):
                self._create_user()

    def _create_user(self) -> None:
        name = f"ptui{os.getpid() % 100000}{secrets.token_hex(2)}"
        password = "Sftp-" + secrets.token_urlsafe(12)
        _remove_stale_accounts()
        _account_tool(["useradd", "--no-create-home", "--home-dir", str(self.public),
                       "--comment", f"{ACCOUNT_MARK}{os.getpid()}",
                       "--shell", "/bin/sh", "--no-user-group", name])
        self._created_user = True
        self.password_user = name
        _account_tool(["chpasswd"], stdin=f"{name}:{password}\n")
        self.password = password

    def _config(self, port: int, extra: str = "") -> Path:
        config = self.folder / "sshd_config"
        config.write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {self.host_key}
PidFile {self.folder / 'sshd.pid'}
AuthorizedKeysFile {self.authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication yes
PermitEmptyPasswords no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
MaxAuthTries 10
MaxStartups 100
MaxSessions 20
LoginGraceTime 30
UseDNS no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
LogLevel VERBOSE
Subsystem sftp internal-sftp
{extra}""")
        return config

    def _launch(self) -> None:
        # OpenSSH 9.8+ penalises a source address after failed logins; the wrong-password and
        # refused-host-key tests must not lock the others out. Older sshd do not know the word.
        extra = "PerSourcePenalties no\n"
        probe = self._config(free_port(), extra)
        if subprocess.run([str(SSHD), "-t", "-f", str(probe)], capture_output=True).returncode != 0:
            extra = ""
        last_error = ""
        for _ in range(5):
            self.port = free_port()
            config = self._config(self.port, extra)
            test = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True)
            if test.returncode != 0:
                raise RuntimeError(f"sshd rejects its test config: {test.stderr.strip()}")
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            log.close()
            if self._wait_ready():
                return
            last_error = self.log_text()[-2000:]
            self._kill()
        raise RuntimeError(f"sshd did not start: {last_error}")

    def _wait_ready(self, limit: float = 15.0) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self._kill()
        if self._created_user and self.password_user:
            with contextlib.suppress(RuntimeError):
                _account_tool(["userdel", "--force", self.password_user])
            self._created_user = False
        shutil.rmtree(self.public, ignore_errors=True)

    # helpers for tests ---------------------------------------------------------------------
    def serve(self, relative: str, content: bytes | str, mode: int = 0o644) -> Path:
        """Write a file under the public folder (folders made readable by everyone)."""
        path = self.public / relative
        for parent in reversed(path.relative_to(self.public).parents):
            d = self.public / parent
            if not d.exists():
                d.mkdir(mode=0o755)
                os.chmod(d, 0o755)
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.write_bytes(content)
        os.chmod(path, mode)
        return path

    def sftp_url(self, relative_folder: str = "") -> str:
        folder = (self.public / relative_folder) if relative_folder else self.public
        return f"sftp://{self.host}{folder}"

    @contextlib.contextmanager
    def frozen_sessions(self) -> Iterator[list[int]]:
        """SIGSTOP every session process (not the listener) until the block ends: a server
        that stops answering in the middle of a transfer."""
        assert self.proc is not None
        pids = _descendants(self.proc.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            yield pids
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
