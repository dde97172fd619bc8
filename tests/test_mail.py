"""Outgoing mail: settings in the database, the password in the mail secret file, delivery
through a real local SMTP server (aiosmtpd) or into the outbox folder."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest

from patron_tui.cli import main
from patron_tui.services import mail
from patron_tui.services.jobs.secrets import Secret
from tests.conftest import district
from tests.smtp_helpers import smtp_server


def _messages(n: int) -> list[mail.ResetMessage]:
    return [mail.ResetMessage(patron_id=i, barcode=f"B{i}", name=f"Pat {i}", to=f"p{i}@school.test",
                              link=Secret(f"https://opac.test/reset?token=TOKEN{i}xyz"), expires="2030-01-01")
            for i in range(1, n + 1)]


def test_settings_round_trip_and_password_apart_from_the_database(tmp_path: Path):
    store = district(tmp_path / "d.db")
    conn = store.connect()
    assert not mail.load_settings(conn).configured
    new = mail.MailSettings(host="smtp.school.test", port=2525, starttls=False, user="lib",
                            from_address="library@school.test", reset_url="https://opac.test/reset")
    with store.writer(conn, None) as w:
        mail.save_settings(w, new)
    assert mail.load_settings(conn) == new
    mail.set_password(store.path, "s3cret-smtp")
    assert mail.get_password(store.path).reveal() == "s3cret-smtp"
    path = mail.secret_store(store.path).path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"s3cret-smtp" not in store.path.read_bytes()
    # the settings went through the changeset writer
    assert conn.execute("SELECT count(*) FROM change_journal WHERE table_name = 'settings'").fetchone()[0] >= 6
    conn.close()


def test_messages_go_to_the_server_one_per_patron(tmp_path: Path):
    msgs = _messages(3)
    with smtp_server() as (port, received):
        settings = mail.MailSettings(host="127.0.0.1", port=port, starttls=False, from_address="lib@school.test")
        delivery = mail.send_reset_links(settings, None, msgs, outbox=tmp_path / "outbox")
    assert sorted(delivery.sent) == [1, 2, 3] and not delivery.failed and delivery.outbox is None
    assert sorted(r.rcpt_tos[0] for r in received) == ["p1@school.test", "p2@school.test", "p3@school.test"]
    for r in received:
        n = r.rcpt_tos[0][1]
        assert f"https://opac.test/reset?token=TOKEN{n}xyz" in r.body
        assert r.message["From"] == "lib@school.test"
    assert not (tmp_path / "outbox").exists()
    assert "TOKEN" not in repr(delivery)


def test_without_a_server_messages_land_in_the_outbox(tmp_path: Path):
    outbox = tmp_path / "d.db.outbox"
    delivery = mail.send_reset_links(mail.MailSettings(), None, _messages(2), outbox=outbox)
    assert delivery.outbox == outbox and sorted(delivery.sent) == [1, 2]
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 2
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    from email import message_from_bytes, policy

    bodies = [message_from_bytes(f.read_bytes(), policy=policy.default).get_body().get_content() for f in files]
    assert "https://opac.test/reset?token=TOKEN1xyz" in bodies[0] + bodies[1]
    assert mail.outbox_path(tmp_path / "d.db") == outbox


def test_unreachable_server_is_a_sentence_without_secrets(tmp_path: Path):
    from tests.smtp_helpers import free_port

    settings = mail.MailSettings(host="127.0.0.1", port=free_port(), starttls=False)
    with pytest.raises(mail.MailError) as err:
        mail.send_reset_links(settings, "pw-never-shown", _messages(1), outbox=tmp_path / "o")
    assert "cannot be reached" in str(err.value)
    assert "TOKEN" not in str(err.value) and "pw-never-shown" not in str(err.value)


def test_cli_mail_settings_and_test(tmp_path: Path, capsys, monkeypatch):
    from patron_tui.store import Store, current_login

    store = Store.create(tmp_path / "d.db", operator=current_login())   # the CLI's operator is the login
    db = str(store.path)
    with smtp_server() as (port, received):
        monkeypatch.setattr("sys.stdin", io.StringIO("smtp-pass-123\n"))
        assert main(["--db", db, "mail-settings", "--host", "127.0.0.1", "--port", str(port), "--starttls", "off",
                     "--from", "lib@school.test", "--reset-url", "https://opac.test/reset",
                     "--password-stdin", "--json"]) == 0
        out = capsys.readouterr().out
        data = json.loads(out)
        assert data["host"] == "127.0.0.1" and data["port"] == port and data["password"] == "stored"
        assert "smtp-pass-123" not in out
        assert mail.get_password(store.path).reveal() == "smtp-pass-123"
        # no user set: the password is stored but no login is attempted (the test server has no AUTH)
        assert main(["--db", db, "mail-test", "--to", "me@school.test"]) == 0
        assert "was sent" in capsys.readouterr().out
        assert [r.rcpt_tos for r in received] == [["me@school.test"]]
    assert main(["--db", db, "mail-settings", "--host", "", "--forget-password"]) == 0
    out = capsys.readouterr().out
    assert "outbox" in out and "password: none" in out
    assert main(["--db", db, "mail-settings", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["--db", db, "mail-test", "--to", "me@school.test"]) == 0
    assert "outbox" in capsys.readouterr().out
    assert len(list(mail.outbox_path(store.path).glob("*.eml"))) == 1


def test_cli_mail_settings_need_the_manage_patrons_permission(tmp_path: Path, capsys):
    store = district(tmp_path / "d.db")     # its operator is "tester", not this login
    assert main(["--db", str(store.path), "mail-settings", "--host", "smtp.school.test"]) == 2
    assert "may not manage patrons" in capsys.readouterr().err
    conn = store.connect()
    assert not mail.load_settings(conn).configured
    conn.close()
    # reading the settings needs no permission, and shows no password
    assert main(["--db", str(store.path), "mail-settings"]) == 0
    assert "password: none" in capsys.readouterr().out


# -- failures part-way, cancelling, progress -----------------------------------------------------------

def _settings(port: int) -> mail.MailSettings:
    return mail.MailSettings(host="127.0.0.1", port=port, starttls=False, from_address="lib@school.test")


def test_a_refused_address_fails_that_patron_only(tmp_path: Path):
    seen = []
    with smtp_server(refuse={"p2@school.test"}, refuse_data={"p3@school.test"}) as (port, received):
        delivery = mail.send_reset_links(_settings(port), None, _messages(4), outbox=tmp_path / "o",
                                         progress=lambda done, total: seen.append((done, total)))
    assert sorted(delivery.sent) == [1, 4]
    assert dict(delivery.failed) == {2: "the mail server refused the address",
                                     3: "the mail server refused the message (554 5.6.0 message refused)"}
    assert sorted(r.rcpt_tos[0] for r in received) == ["p1@school.test", "p4@school.test"]
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "TOKEN" not in repr(delivery)


def test_a_connection_that_drops_fails_the_rest(tmp_path: Path):
    with smtp_server(drop_after=2) as (port, received):
        delivery = mail.send_reset_links(_settings(port), None, _messages(5), outbox=tmp_path / "o")
    assert delivery.sent == [1, 2] and len(received) == 2
    assert [pid for pid, _ in delivery.failed] == [3, 4, 5]
    assert "the mail server connection was lost" in delivery.failed[0][1]
    assert all(reason == "the mail server connection was lost first" for _, reason in delivery.failed[1:])
    assert "TOKEN" not in repr(delivery)


def test_cancelling_stops_before_the_next_message(tmp_path: Path):
    asked = []

    def cancelled() -> bool:
        asked.append(1)
        return len(asked) > 2        # two messages go, then the operator cancels

    with smtp_server() as (port, received):
        delivery = mail.send_reset_links(_settings(port), None, _messages(4), outbox=tmp_path / "o",
                                         cancelled=cancelled)
    assert delivery.sent == [1, 2] and not delivery.failed and len(received) == 2
    # the outbox likewise
    asked.clear()
    delivery = mail.send_reset_links(mail.MailSettings(), None, _messages(4), outbox=tmp_path / "o",
                                     cancelled=cancelled)
    assert delivery.sent == [1, 2] and len(list((tmp_path / "o").glob("*.eml"))) == 2
