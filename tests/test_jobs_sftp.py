"""The SFTP source against a real OpenSSH sshd on 127.0.0.1 (tests/sshd.py): key and password
login, Test Server, host keys refused until accepted, the operator's sentences, the settle
check, the .part download, the channel timeout, and a job run that imports the file."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import paramiko
import pytest

from patron_tui.services.jobs import sftp as sftp_mod
from patron_tui.services.jobs.model import Job
from patron_tui.services.jobs.secrets import Secret, SecretStore
from patron_tui.services.jobs.sftp import (
    AuthError,
    ConnectError,
    FileChanging,
    HostKeyChanged,
    HostKeyUnknown,
    KnownHosts,
    RemotePathError,
    TransferError,
    accept_host_key,
    connect,
    fetch_sftp,
    fingerprint,
    test_sftp,
)
from patron_tui.services.jobs.sources import SourceError, fetch, test_job

from tests.jobs_helpers import PROPS
from tests.sshd import SshServer, keygen, ssh_keygen_fingerprint

CSV = "ID,Barcode,Last,First,School\nD1,B1,Able,Ann,HS\nD2,B2,Baker,Bob,HS\n"
TIMEOUT = 10.0


def host_key(srv: SshServer) -> paramiko.PKey:
    return paramiko.PKey.from_path(srv.host_key)


@pytest.fixture
def known(tmp_path: Path, sshd: SshServer) -> KnownHosts:
    """A known_hosts file in which the test server's key is accepted."""
    kh = KnownHosts(tmp_path / "district.known_hosts")
    kh.accept(sshd.host, sshd.port, host_key(sshd))
    return kh


@pytest.fixture
def folder(sshd: SshServer) -> str:
    """A folder of its own on the server for each test, holding patrons.csv."""
    name = "f" + uuid.uuid4().hex[:8]
    sshd.serve(f"{name}/patrons.csv", CSV)
    return name


def key_job(srv: SshServer, folder: str, *, key: Path | None = None, file_name: str = "patrons.csv",
            props: str = "/nowhere.properties") -> Job:
    return Job(name="Nightly", source="sftp", sftp_url=srv.sftp_url(folder), sftp_port=srv.port,
               sftp_user=srv.key_user, sftp_auth="key", sftp_key_path=str(key or srv.client_key),
               file_name=file_name, properties_path=props)


def password_job(srv: SshServer, folder: str, *, file_name: str = "patrons.csv",
                 props: str = "/nowhere.properties") -> Job:
    return Job(name="Nightly", source="sftp", sftp_url=srv.sftp_url(folder), sftp_port=srv.port,
               sftp_user=srv.password_user, sftp_auth="password", file_name=file_name,
               properties_path=props)


def no_sleep(_seconds: float) -> None:
    pass


# --- host keys --------------------------------------------------------------------------------

def test_fingerprint_is_openssh_s(sshd: SshServer) -> None:
    assert fingerprint(host_key(sshd)) == ssh_keygen_fingerprint(sshd.host_pub)


def test_unknown_host_key_refused_until_accepted(sshd: SshServer, folder: str, tmp_path: Path) -> None:
    kh = KnownHosts(tmp_path / "kh")
    job = key_job(sshd, folder)
    expected = ssh_keygen_fingerprint(sshd.host_pub)
    with pytest.raises(HostKeyUnknown) as err:
        fetch_sftp(job, None, tmp_path / "stage", known_hosts=kh, settle_seconds=0, sleep=no_sleep)
    assert err.value.fingerprint == expected and expected in str(err.value)
    assert isinstance(err.value, SourceError) and err.value.step == "host key"
    assert not (tmp_path / "stage").exists() and not kh.path.exists()

    report = test_sftp(job, None, known_hosts=kh, timeout=TIMEOUT)
    assert not report.ok and report.fingerprint == expected
    assert [(c.step, c.ok) for c in report.checks] == [("connect", True), ("host key", False)]
    assert "not known yet" in report.checks[-1].sentence and "accept" in report.checks[-1].sentence

    # a fingerprint the operator was not shown is not accepted
    with pytest.raises(HostKeyChanged):
        accept_host_key(job, "SHA256:" + "A" * 43, known_hosts=kh, timeout=TIMEOUT)
    assert kh.fingerprints(sshd.host, sshd.port) == []
    assert accept_host_key(job, expected, known_hosts=kh, timeout=TIMEOUT) == expected
    assert kh.fingerprints(sshd.host, sshd.port) == [expected]
    assert f"[{sshd.host}]:{sshd.port} ssh-ed25519 " in kh.path.read_text()
    out = fetch_sftp(job, None, tmp_path / "stage", known_hosts=kh, settle_seconds=0, sleep=no_sleep)
    assert out.read_text() == CSV


def test_changed_host_key_always_refused(sshd: SshServer, folder: str, tmp_path: Path) -> None:
    other = paramiko.PKey.from_path(keygen(tmp_path / "other_host_key"))
    kh = KnownHosts(tmp_path / "kh")
    kh.accept(sshd.host, sshd.port, other)
    job = key_job(sshd, folder)
    retried: list[float] = []
    with pytest.raises(HostKeyChanged) as err:
        fetch_sftp(job, None, tmp_path / "stage", known_hosts=kh, settle_seconds=0,
                   sleep=retried.append, attempts=3, backoff=1)
    assert retried == []   # a refused host key is not retried
    text = str(err.value)
    assert "CHANGED" in text and fingerprint(other) in text and ssh_keygen_fingerprint(sshd.host_pub) in text
    assert not (tmp_path / "stage").exists()
    report = test_sftp(job, None, known_hosts=kh, timeout=TIMEOUT)
    assert report.checks[-1].step == "host key" and not report.checks[-1].ok
    assert report.fingerprint == ssh_keygen_fingerprint(sshd.host_pub)
    # accepting over it is refused too, unless the old key is forgotten on purpose
    with pytest.raises(HostKeyChanged):
        kh.accept(sshd.host, sshd.port, host_key(sshd))
    with pytest.raises(HostKeyChanged):
        accept_host_key(job, report.fingerprint, known_hosts=kh, timeout=TIMEOUT)
    assert kh.fingerprints(sshd.host, sshd.port) == [fingerprint(other)]
    assert kh.forget(sshd.host, sshd.port) == 1
    kh.accept(sshd.host, sshd.port, host_key(sshd))
    assert test_sftp(job, None, known_hosts=kh, timeout=TIMEOUT).ok


def test_hashed_known_hosts_entries_are_read(sshd: SshServer, folder: str, tmp_path: Path) -> None:
    key = host_key(sshd)
    name = f"[{sshd.host}]:{sshd.port}"
    path = tmp_path / "kh"
    path.write_text(f"# comment\n{paramiko.HostKeys.hash_host(name)} {key.get_name()} {key.get_base64()}\n")
    assert test_sftp(key_job(sshd, folder), None, known_hosts=path, timeout=TIMEOUT).ok


# --- logins and downloads ---------------------------------------------------------------------

def test_key_login_fetches_the_file(sshd: SshServer, folder: str, known: KnownHosts, tmp_path: Path) -> None:
    out = fetch_sftp(key_job(sshd, folder), None, tmp_path / "stage", known_hosts=known,
                     settle_seconds=0, sleep=no_sleep)
    assert out == tmp_path / "stage" / "patrons.csv"
    assert out.read_text() == CSV
    assert sorted(p.name for p in out.parent.iterdir()) == ["patrons.csv"]   # no .part left
    remote = sshd.public / folder / "patrons.csv"
    assert int(out.stat().st_mtime) == int(remote.stat().st_mtime)


def test_key_with_passphrase_from_the_secret_store(sshd: SshServer, folder: str, known: KnownHosts,
                                                   tmp_path: Path) -> None:
    job = key_job(sshd, folder, key=sshd.passphrase_key)
    store = SecretStore(tmp_path / "district.secrets")
    with pytest.raises(AuthError, match="protected by a passphrase"):
        fetch(job, tmp_path / "stage", secret_store=store, known_hosts=known, settle_seconds=0)
    store.set(job.name, "not-the-passphrase")
    with pytest.raises(AuthError, match="passphrase is wrong"):
        fetch(job, tmp_path / "stage", secret_store=store, known_hosts=known, settle_seconds=0)
    store.set(job.name, sshd.passphrase)
    out = fetch(job, tmp_path / "stage", secret_store=store, known_hosts=known, settle_seconds=0)
    assert out.read_text() == CSV


def test_password_login_fetches_the_file(sshd_password: SshServer, folder: str, known: KnownHosts,
                                         tmp_path: Path) -> None:
    srv = sshd_password
    out = fetch_sftp(password_job(srv, folder), Secret(srv.password), tmp_path / "stage",
                     known_hosts=known, settle_seconds=0, sleep=no_sleep)
    assert out.read_text() == CSV


def test_test_server_reports_every_step(sshd_password: SshServer, folder: str, known: KnownHosts,
                                        tmp_path: Path) -> None:
    srv = sshd_password
    props = tmp_path / "p.properties"
    props.write_text(PROPS)
    job = password_job(srv, folder, props=str(props))
    store = SecretStore(tmp_path / "district.secrets")
    store.set(job.name, srv.password)
    report = test_job(job, store, known_hosts=known, timeout=TIMEOUT)
    assert report.ok, report.as_dict()
    assert [c.step for c in report.checks] == ["connect", "host key", "login", "folder", "file", "properties"]
    assert report.fingerprint == ssh_keygen_fingerprint(srv.host_pub)
    assert report.fingerprint in report.checks[1].sentence
    remote = srv.public / folder / "patrons.csv"
    file_check = report.checks[4]
    assert f"{len(CSV)} bytes" in file_check.sentence
    assert file_check.detail == f"size={len(CSV)} mtime={int(remote.stat().st_mtime)}"
    assert srv.password not in repr(report.as_dict())


def test_wrong_password_explained_and_not_retried(sshd_password: SshServer, folder: str,
                                                  known: KnownHosts, tmp_path: Path) -> None:
    srv = sshd_password
    job = password_job(srv, folder)
    wrong = "Wrong-" + srv.password
    retried: list[float] = []
    with pytest.raises(AuthError) as err:
        fetch_sftp(job, wrong, tmp_path / "stage", known_hosts=known, settle_seconds=0,
                   sleep=retried.append, attempts=3, backoff=1)
    assert retried == []
    assert f"refused the password for user {srv.password_user!r}" in str(err.value)
    assert wrong not in str(err.value) and err.value.__cause__ is None
    report = test_sftp(job, wrong, known_hosts=known, timeout=TIMEOUT)
    assert [(c.step, c.ok) for c in report.checks][-1] == ("login", False)
    assert "enter the password again" in report.checks[-1].sentence
    # no password stored at all says so, not "wrong password"
    report = test_sftp(job, None, known_hosts=known, timeout=TIMEOUT)
    assert "No password is stored" in report.checks[-1].sentence


def test_missing_folder_explained_with_the_names_there(sshd: SshServer, folder: str, known: KnownHosts,
                                                       tmp_path: Path) -> None:
    sshd.serve(f"{folder}/Exports/x.csv", "x")
    job = key_job(sshd, f"{folder}/exports")   # the folder is "Exports": names are case-sensitive
    with pytest.raises(RemotePathError) as err:
        fetch_sftp(job, None, tmp_path / "stage", known_hosts=known, settle_seconds=0, sleep=no_sleep)
    text = str(err.value)
    assert f"{sshd.public / folder / 'exports'} does not exist" in text
    assert '"Exports/"' in text and "case-sensitive" in text
    assert f"did you mean {sshd.public / folder / 'Exports'}?" in text
    assert "Exports/" in err.value.names and "patrons.csv" in err.value.names
    report = test_sftp(job, None, known_hosts=known, timeout=TIMEOUT)
    assert (report.checks[-1].step, report.checks[-1].ok) == ("folder", False)
    assert report.checks[-1].sentence == text


def test_missing_file_explained_with_the_names_there(sshd: SshServer, folder: str, known: KnownHosts,
                                                     tmp_path: Path) -> None:
    sshd.serve(f"{folder}/Staff.csv", "x")
    job = key_job(sshd, folder, file_name="Patrons.csv")
    with pytest.raises(RemotePathError) as err:
        fetch_sftp(job, None, tmp_path / "stage", known_hosts=known, settle_seconds=0, sleep=no_sleep)
    text = str(err.value)
    assert "'Patrons.csv' is not in" in text and '"patrons.csv", "Staff.csv"' in text
    assert "did you mean 'patrons.csv'?" in text
    report = test_sftp(job, None, known_hosts=known, timeout=TIMEOUT)
    assert (report.checks[-1].step, report.checks[-1].ok) == ("file", False)
    assert '"Staff.csv"' in report.checks[-1].sentence


def test_permission_denied_explained(sshd_password: SshServer, folder: str, known: KnownHosts,
                                     tmp_path: Path) -> None:
    srv = sshd_password
    srv.serve(f"{folder}/secret.csv", CSV, mode=0o600)   # owned by root: the test account may not read it
    job = password_job(srv, folder, file_name="secret.csv")
    with pytest.raises(RemotePathError, match="permission denied"):
        fetch_sftp(job, srv.password, tmp_path / "stage", known_hosts=known, settle_seconds=0,
                   sleep=no_sleep)
    assert not list((tmp_path / "stage").glob("*"))
    report = test_sftp(job, srv.password, known_hosts=known, timeout=TIMEOUT)
    assert (report.checks[-1].step, report.checks[-1].ok) == ("file", False)
    assert "permission denied" in report.checks[-1].sentence


def test_connection_refused_explained_and_retried_with_backoff(sshd: SshServer, folder: str,
                                                               known: KnownHosts, tmp_path: Path) -> None:
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = key_job(sshd, folder).model_copy(update={"sftp_port": port})
    waits: list[float] = []
    told: list[str] = []
    with pytest.raises(ConnectError) as err:
        fetch_sftp(job, None, tmp_path / "stage", known_hosts=known, settle_seconds=0,
                   attempts=3, backoff=2, sleep=waits.append, on_retry=lambda e, d: told.append(str(e)))
    assert err.value.reason == "refused" and "refused the connection" in str(err.value)
    assert waits == [2, 4] and len(told) == 2
    report = test_sftp(job, None, known_hosts=known, timeout=TIMEOUT)
    assert [(c.step, c.ok) for c in report.checks] == [("connect", False)]
    assert f"port {port}" in report.checks[0].sentence


def test_name_not_resolved_explained(sshd: SshServer, folder: str, known: KnownHosts, monkeypatch) -> None:
    def no_dns(*args, **kw):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(sftp_mod.socket, "getaddrinfo", no_dns)
    job = key_job(sshd, folder).model_copy(update={"sftp_url": "sftp://sftp.district.invalid/in"})
    report = test_sftp(job, None, known_hosts=known, timeout=TIMEOUT)
    assert not report.ok and report.checks[0].step == "connect"
    assert "'sftp.district.invalid' could not be resolved" in report.checks[0].sentence


def test_silent_server_times_out(sshd: SshServer, folder: str, known: KnownHosts) -> None:
    with socket.socket() as listener:   # accepts connections, never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        job = key_job(sshd, folder).model_copy(update={"sftp_port": listener.getsockname()[1]})
        report = test_sftp(job, None, known_hosts=known, timeout=0.5)
    assert [(c.step, c.ok) for c in report.checks] == [("connect", False)]
    assert "within 0.5 s" in report.checks[0].sentence and "SFTP port" in report.checks[0].sentence


# --- the settle check, the .part download, the channel timeout --------------------------------

def test_a_changing_file_is_left_for_the_next_run(sshd: SshServer, folder: str, known: KnownHosts,
                                                  tmp_path: Path) -> None:
    remote = sshd.public / folder / "patrons.csv"

    def sis_writes_more(_seconds: float) -> None:   # between the two looks the SIS appends
        with remote.open("a") as fh:
            fh.write("D3,B3,Cole,Cy,HS\n")

    with pytest.raises(FileChanging, match="still changing .* left for the next run"):
        fetch_sftp(key_job(sshd, folder), None, tmp_path / "stage", known_hosts=known,
                   settle_seconds=5, sleep=sis_writes_more)
    assert not (tmp_path / "stage").exists() or not list((tmp_path / "stage").iterdir())


def test_download_goes_to_part_then_renamed(sshd: SshServer, folder: str, known: KnownHosts,
                                            tmp_path: Path, monkeypatch) -> None:
    big = "ID,Barcode,Last,First,School\n" + "".join(f"D{i},B{i},L{i},F{i},HS\n" for i in range(20000))
    sshd.serve(f"{folder}/big.csv", big)
    seen: list[tuple[str, str, int]] = []
    real_replace = sftp_mod.os.replace

    def watching_replace(src, dst):
        seen.append((Path(src).name, Path(dst).name, Path(src).stat().st_size))
        assert not Path(dst).exists()
        return real_replace(src, dst)

    monkeypatch.setattr(sftp_mod.os, "replace", watching_replace)
    out = fetch_sftp(key_job(sshd, folder, file_name="big.csv"), None, tmp_path / "stage",
                     known_hosts=known, settle_seconds=0, sleep=no_sleep)
    assert seen == [("big.csv.part", "big.csv", len(big))]
    assert out.read_text() == big and not (tmp_path / "stage" / "big.csv.part").exists()


def test_a_short_download_is_not_renamed(sshd: SshServer, folder: str, known: KnownHosts,
                                         tmp_path: Path, monkeypatch) -> None:
    real_read = paramiko.SFTPFile.read
    calls = {"n": 0}

    def cut_short(self, size=None):   # the server's file shrinks under the download
        calls["n"] += 1
        return real_read(self, size)[:-10] if calls["n"] == 1 else b""

    monkeypatch.setattr(paramiko.SFTPFile, "read", cut_short)
    with pytest.raises(FileChanging, match="changed during the download"):
        fetch_sftp(key_job(sshd, folder), None, tmp_path / "stage", known_hosts=known,
                   settle_seconds=0, sleep=no_sleep)
    assert list((tmp_path / "stage").iterdir()) == []


def test_channel_timeout_is_set(sshd: SshServer, known: KnownHosts, folder: str) -> None:
    with connect(key_job(sshd, folder), None, known_hosts=known, timeout=7.5) as session:
        assert session.sftp.get_channel().gettimeout() == 7.5
        assert session.transport.banner_timeout == 7.5 and session.transport.auth_timeout == 7.5
        assert session.transport.channel_timeout == 7.5


def test_a_stalled_server_ends_the_attempt(sshd: SshServer, folder: str, known: KnownHosts,
                                           tmp_path: Path) -> None:
    frozen: list = []

    def server_stalls(_seconds: float) -> None:   # between the looks the server stops answering
        cm = sshd.frozen_sessions()
        cm.__enter__()
        frozen.append(cm)

    try:
        with pytest.raises(TransferError, match="stopped answering"):
            fetch_sftp(key_job(sshd, folder), None, tmp_path / "stage", known_hosts=known, timeout=1.0,
                       settle_seconds=1, sleep=server_stalls, attempts=1)
    finally:
        for cm in frozen:
            cm.__exit__(None, None, None)
    assert frozen and not list((tmp_path / "stage").glob("*"))


def test_a_hanging_name_lookup_times_out(sshd: SshServer, folder: str, known: KnownHosts, monkeypatch) -> None:
    import threading

    release = threading.Event()

    def stuck(*args, **kw):   # a name service that never answers (until the test ends)
        release.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(sftp_mod.socket, "getaddrinfo", stuck)
    job = key_job(sshd, folder).model_copy(update={"sftp_url": "sftp://sftp.district.invalid/in"})
    try:
        report = test_sftp(job, None, known_hosts=known, timeout=0.2)
    finally:
        release.set()
    assert [(c.step, c.ok) for c in report.checks] == [("connect", False)]
    assert "name service (DNS) is not answering" in report.checks[0].sentence


def test_errors_survive_pickling_without_their_key(sshd: SshServer, folder: str, tmp_path: Path) -> None:
    import pickle

    with pytest.raises(HostKeyUnknown) as err:
        connect(key_job(sshd, folder), None, known_hosts=tmp_path / "kh", timeout=TIMEOUT)
    copy = pickle.loads(pickle.dumps(err.value))
    assert type(copy) is HostKeyUnknown and str(copy) == str(err.value)
    assert copy.fingerprint == err.value.fingerprint and copy.step == "host key"
