"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, for the mail tests."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Iterator


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self):
        return message_from_bytes(self.data, policy=policy.default)

    @property
    def body(self) -> str:
        return self.message.get_body(preferencelist=("plain",)).get_content()


@dataclass
class _Keeper:
    received: list[Received] = field(default_factory=list)
    #: RCPT TO these addresses is answered 550 (the server refuses the address)
    refuse: frozenset[str] = frozenset()
    #: DATA for these recipients is answered 554 (the server refuses the message)
    refuse_data: frozenset[str] = frozenset()
    #: after this many messages kept, the next DATA closes the connection (it drops mid-way)
    drop_after: int | None = None
    #: set when a DATA arrives; the DATA then waits (blocking the server) until `release` is set
    arrived: threading.Event | None = None
    release: threading.Event | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.release is not None and not self.release.is_set():
            if self.arrived is not None:
                self.arrived.set()
            self.release.wait(60)      # a test that never releases fails instead of hanging
        if self.drop_after is not None and len(self.received) >= self.drop_after:
            server.transport.close()
            return "421 closing"
        if set(envelope.rcpt_tos) & self.refuse_data:
            return "554 5.6.0 message refused"
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def smtp_server(*, refuse=(), refuse_data=(), drop_after: int | None = None,
                arrived: threading.Event | None = None,
                release: threading.Event | None = None) -> Iterator[tuple[int, list[Received]]]:
    """(port, the list its messages land in) while the server runs. `refuse`: addresses whose
    RCPT is refused; `refuse_data`: recipients whose message is refused at DATA; `drop_after`:
    the connection closes at the DATA after that many messages; `arrived`/`release`: each DATA
    sets `arrived` and blocks until `release` is set (released when the server stops)."""
    from aiosmtpd.controller import Controller

    keeper = _Keeper(refuse=frozenset(refuse), refuse_data=frozenset(refuse_data), drop_after=drop_after,
                     arrived=arrived, release=release)
    controller = Controller(keeper, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, keeper.received
    finally:
        if release is not None:
            release.set()
        controller.stop()
