"""Outgoing mail: the SMTP server settings and the password reset messages.

Settings live in the `settings` table (`smtp_host`, `smtp_port`, `smtp_starttls`, `smtp_user`,
`smtp_from`, and `password_reset_url`, the page a reset link opens); the SMTP password is kept
like the SFTP secrets, in a `SecretStore` file beside the database
(`<db folder>/<db stem>.mail.secrets`, mode 0600), never in the database, a log or a message.

`send_reset_links(...)` sends one message per patron through `smtplib` when a server is
configured (`smtp_host` set); with none configured each message is written as an `.eml` file into
the outbox folder beside the database (`<db>.outbox/`, mode 0700, files 0600: they hold live reset
links) and the caller's report says so. What is returned names patrons and addresses, never a
link or a token; an error text that would quote one is scrubbed.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from patron_tui.services.jobs.secrets import Secret, SecretStore, SecretStoreError, reveal
from patron_tui.store.changeset import ChangesetWriter

SETTING_KEYS = {
    "host": "smtp_host",
    "port": "smtp_port",
    "starttls": "smtp_starttls",
    "user": "smtp_user",
    "from_address": "smtp_from",
    "reset_url": "password_reset_url",
}
SECRET_KEY = "smtp"
TIMEOUT = 20.0          # seconds for one SMTP conversation step


class MailError(RuntimeError):
    """Mail cannot be sent as configured; the text is a sentence without any secret."""


class MailSettings(BaseModel):
    """The district's outgoing mail server (empty host: no server, messages go to the outbox)."""

    host: str = ""
    """SMTP server name or address; empty means no server is configured."""
    port: int = Field(default=587, ge=1, le=65535)
    """SMTP port: 587 for submission with STARTTLS, 25 for a relay."""
    starttls: bool = True
    """Upgrade the connection with STARTTLS before logging in."""
    user: str = ""
    """Login name on the server; empty means the server takes mail without a login."""
    from_address: str = ""
    """The From address of the messages (default: patron-tui@<this host>)."""
    reset_url: str = ""
    """The page a password reset link opens; the token is added as `?token=...`."""

    @field_validator("host", "user", "from_address", "reset_url")
    @classmethod
    def _clean(cls, v: str) -> str:
        v = v.strip()
        if any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("must not contain control characters")
        return v

    @property
    def configured(self) -> bool:
        return bool(self.host)

    def sender(self) -> str:
        return self.from_address or f"patron-tui@{socket.gethostname() or 'localhost'}"

    def describe(self) -> str:
        if not self.configured:
            return "no mail server configured: messages are written to the outbox folder"
        tls = "STARTTLS" if self.starttls else "no STARTTLS"
        login = f", login {self.user}" if self.user else ", no login"
        return f"{self.host}:{self.port} ({tls}{login}), from {self.sender()}"


def load_settings(conn) -> MailSettings:
    rows = {r[0]: r[1] for r in conn.execute(
        "SELECT key, value FROM settings WHERE key IN (SELECT value FROM json_each(?))",
        (json.dumps(list(SETTING_KEYS.values())),))}
    values: dict = {}
    for name, key in SETTING_KEYS.items():
        if key in rows:
            values[name] = rows[key]
    if "starttls" in values:
        values["starttls"] = str(values["starttls"]).lower() in ("on", "1", "true", "yes")
    if "port" in values:
        try:
            values["port"] = int(values["port"])
        except ValueError:
            values.pop("port")
    return MailSettings(**values)


def save_settings(writer: ChangesetWriter, settings: MailSettings) -> None:
    """Write the settings through the changeset writer (inside its transaction)."""
    for name, key in SETTING_KEYS.items():
        value = getattr(settings, name)
        text = ("on" if value else "off") if isinstance(value, bool) else str(value)
        if writer.fetch("settings", key) is None:
            writer.insert("settings", {"key": key, "value": text})
        else:
            writer.update("settings", key, {"value": text})


# -- the password -----------------------------------------------------------------------------

def secret_store(db_path: str | os.PathLike[str]) -> SecretStore:
    """The SMTP password's store: `<db folder>/<db stem>.mail.secrets`."""
    db = Path(db_path).expanduser()
    return SecretStore(db.with_name(db.stem + ".mail.secrets"))


def get_password(db_path) -> Secret | None:
    try:
        return secret_store(db_path).get(SECRET_KEY)
    except SecretStoreError as exc:
        raise MailError(str(exc).replace("SFTP passwords", "SMTP password")) from None


def set_password(db_path, password: str | Secret | None) -> None:
    """Store the SMTP password (None or "" forgets it)."""
    try:
        secret_store(db_path).set(SECRET_KEY, password)
    except SecretStoreError as exc:
        raise MailError(str(exc).replace("SFTP passwords", "SMTP password")) from None


def outbox_path(db_path) -> Path:
    """`<db>.outbox/`: where messages go when no mail server is configured."""
    db = Path(db_path).expanduser()
    return db.with_name(db.name + ".outbox")


# -- messages -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResetMessage:
    """One patron's reset link. `link` is a Secret: it never prints."""

    patron_id: int
    barcode: str | None
    name: str
    to: str
    link: Secret
    expires: str        # YYYY-MM-DD


@dataclass
class Delivery:
    """What `send_reset_links` did: addresses and patrons only, never a link."""

    sent: list[int] = field(default_factory=list)                  # patron ids delivered
    failed: list[tuple[int, str]] = field(default_factory=list)    # (patron id, reason)
    outbox: Path | None = None                                     # set when written there
    server: str = ""


def _message(settings: MailSettings, m: ResetMessage, library: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.sender()
    msg["To"] = m.to
    msg["Subject"] = f"Reset your {library} password"
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg["Message-ID"] = make_msgid(domain="patron-tui")
    msg.set_content(
        f"Hello {m.name},\n\n"
        f"A password reset was requested for your {library} account. Open this link to choose "
        f"your new password:\n\n{m.link.reveal()}\n\n"
        f"The link works until {m.expires}. If you did not expect this message, tell the library.\n")
    return msg


def _scrub(text: str, messages: list[ResetMessage]) -> str:
    for m in messages:
        link = m.link.reveal()
        if link and link in text:
            text = text.replace(link, "[link]")
        token = link.rsplit("token=", 1)[-1]
        if token and token in text:
            text = text.replace(token, "[token]")
    return text


def send_reset_links(settings: MailSettings, password: Secret | str | None, messages: list[ResetMessage],
                     *, outbox: Path, library: str = "library", cancelled=lambda: False,
                     progress=None) -> Delivery:
    """Deliver each message: through the SMTP server, or into `outbox` when none is configured.

    Callers send after their write transaction has committed (a conversation with a server can
    take minutes; the database must not stay locked meanwhile).

    A message the server refuses (the address, the sender or the content) is a failure for that
    patron; a connection that drops part-way (the socket fails, the server disconnects or answers
    421) is a failure for that patron and every one after it. A server that cannot be reached or
    refuses the login raises MailError (nothing was sent). `cancelled()` is asked before each
    message: once true, the rest are neither sent nor failed (the caller sees who is in neither
    list). `progress(done, total)` is called after each message."""
    delivery = Delivery()
    if not messages:
        return delivery
    total = len(messages)

    def tick() -> None:
        if progress is not None:
            progress(len(delivery.sent) + len(delivery.failed), total)

    if not settings.configured:
        outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(outbox, 0o700)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        for m in messages:
            if cancelled():
                break
            path = outbox / f"{stamp}-reset-{m.patron_id}.eml"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(bytes(_message(settings, m, library)))
            except OSError as exc:
                delivery.failed.append((m.patron_id, f"the message could not be written to the outbox folder "
                                                     f"({type(exc).__name__}: {exc.strerror or exc})"))
            else:
                delivery.sent.append(m.patron_id)
            tick()
        delivery.outbox = outbox
        return delivery
    delivery.server = f"{settings.host}:{settings.port}"
    try:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=TIMEOUT)
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"the mail server {settings.host}:{settings.port} cannot be reached "
                        f"({type(exc).__name__}); no message was sent") from None
    try:
        try:
            smtp.ehlo()
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.user:
                smtp.login(settings.user, reveal(password) or "")
        except smtplib.SMTPAuthenticationError:
            raise MailError(f"the mail server {settings.host} refused the login of {settings.user!r}; "
                            "check the user and password (patron-tui mail-settings); no message was sent") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"the mail server {settings.host}:{settings.port} failed before sending "
                            f"({type(exc).__name__}: {_scrub(str(exc), messages)}); no message was sent") from None
        for i, m in enumerate(messages):
            if cancelled():
                break
            lost = False
            try:
                smtp.send_message(_message(settings, m, library))
                delivery.sent.append(m.patron_id)
            except smtplib.SMTPRecipientsRefused:
                delivery.failed.append((m.patron_id, "the mail server refused the address"))
            except smtplib.SMTPResponseException as exc:      # sender or content refused, or 421 closing
                lost = exc.smtp_code == 421
                delivery.failed.append((m.patron_id, f"the mail server refused the message "
                                        f"({exc.smtp_code} {_scrub(_text(exc.smtp_error), messages)})"))
            except (OSError, smtplib.SMTPException) as exc:   # SMTPServerDisconnected, a socket error
                lost = True
                delivery.failed.append((m.patron_id, f"the mail server connection was lost "
                                        f"({type(exc).__name__}: {_scrub(str(exc), messages)})"))
            if lost:   # the connection is gone: the rest are not sent either
                for rest in messages[i + 1:]:
                    delivery.failed.append((rest.patron_id, "the mail server connection was lost first"))
                tick()
                break
            tick()
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
    return delivery


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def send_test(settings: MailSettings, password: Secret | str | None, to: str, *, outbox: Path) -> str:
    """Send (or write to the outbox) one test message; returns a sentence saying where it went."""
    msg = EmailMessage()
    msg["From"] = settings.sender()
    msg["To"] = to
    msg["Subject"] = "patron-tui test message"
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    msg.set_content("This is a test message from patron-tui: the mail settings work.\n")
    if not settings.configured:
        outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = outbox / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-test.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(bytes(msg))
        return f"no mail server is configured: the test message was written to {path}"
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=TIMEOUT) as smtp:
            smtp.ehlo()
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.user:
                smtp.login(settings.user, reveal(password) or "")
            smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError:
        raise MailError(f"the mail server {settings.host} refused the login of {settings.user!r}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"the test message to {to} was not sent: {type(exc).__name__}: {exc}") from None
    return f"the test message to {to} was sent through {settings.host}:{settings.port}"


__all__ = ["Delivery", "MailError", "MailSettings", "ResetMessage", "load_settings", "outbox_path",
           "get_password", "save_settings", "secret_store", "send_reset_links", "send_test", "set_password"]
