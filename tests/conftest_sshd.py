"""The `sshd` fixture: one real OpenSSH server per test process (see tests/sshd.py).

Without /usr/sbin/sshd the tests that use it skip, naming the Debian package openssh-server;
with PATRON_TUI_REQUIRE_SSHD=1 (set by .ci/run) they fail instead, so CI always runs them.
"""

from __future__ import annotations

import pytest

from tests.sshd import SshServer, missing_reason, required


def skip_or_fail(reason: str) -> None:
    if required():
        pytest.fail(f"{reason} (PATRON_TUI_REQUIRE_SSHD=1 turns this skip into a failure)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    reason = missing_reason()
    if reason:
        skip_or_fail(reason)
    server = SshServer.start(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sshd_password(sshd: SshServer) -> SshServer:
    """The server, where password login can be tested (a throwaway account exists)."""
    if sshd.password_user is None:
        skip_or_fail("password login needs a throwaway account, which only root can create "
                     "(useradd, chpasswd); run the tests as root")
    return sshd
