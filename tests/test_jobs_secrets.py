"""The secret store: SFTP passwords and key passphrases apart from the database, 0600,
written atomically, masked wherever they could be shown."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from patron_tui.services.jobs import secrets as secrets_mod
from patron_tui.services.jobs.secrets import (
    MASK,
    Secret,
    SecretStore,
    SecretStoreError,
    default_secret_store,
    mask,
    reveal,
    secret_store_path,
)

PASSWORD = "S3cret-Pa55word!"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_set_get_delete_round_trip(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "district.secrets")
    assert store.get("Nightly") is None
    store.set("Nightly", PASSWORD)
    store.set("Other", "another")
    got = store.get("Nightly")
    assert isinstance(got, Secret) and got.reveal() == PASSWORD
    assert store.names() == ["Nightly", "Other"]
    assert store.delete("Nightly") is True
    assert store.delete("Nightly") is False
    assert store.get("Nightly") is None
    assert store.get("Other").reveal() == "another"
    store.set("Other", "")   # blank removes
    assert store.names() == []


def test_file_is_created_0600_and_beside_not_in_the_database(tmp_path: Path) -> None:
    db = tmp_path / "district.db"
    store = default_secret_store(db)
    assert store.path == secret_store_path(db) == tmp_path / "district.secrets"
    store.set("Nightly", PASSWORD)
    assert mode(store.path) == 0o600
    data = json.loads(store.path.read_text())
    assert data["jobs"] == {"Nightly": PASSWORD}
    # rewriting keeps 0600, whatever the umask
    old = os.umask(0)
    try:
        store.set("Nightly", PASSWORD + "2")
    finally:
        os.umask(old)
    assert mode(store.path) == 0o600


def test_written_atomically_no_temporary_left_and_old_file_replaced(tmp_path: Path, monkeypatch) -> None:
    store = SecretStore(tmp_path / "s.secrets")
    store.set("A", "first")
    inode_before = store.path.stat().st_ino
    store.set("B", "second")
    # a new file took the old one's name (temp + os.replace), nothing else is left behind
    assert store.path.stat().st_ino != inode_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.secrets", "s.secrets.lock"]

    # a write that fails half-way leaves the old file whole and no temporary behind
    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(secrets_mod.os, "replace", boom)
    with pytest.raises(OSError):
        store.set("C", "third")
    monkeypatch.undo()
    assert store.names() == ["A", "B"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.secrets", "s.secrets.lock"]


def test_fsync_before_replace(tmp_path: Path, monkeypatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(secrets_mod.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(secrets_mod.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    SecretStore(tmp_path / "s.secrets").set("A", "x")
    assert calls[:2] == ["fsync", "replace"] and calls[-1] == "fsync"   # file, rename, folder


def test_world_readable_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.secrets")
    store.set("Nightly", PASSWORD)
    os.chmod(store.path, 0o644)
    with pytest.raises(SecretStoreError) as err:
        store.get("Nightly")
    text = str(err.value)
    assert "chmod 600" in text and str(store.path) in text and "0644" in text
    assert PASSWORD not in text
    with pytest.raises(SecretStoreError):
        store.check()
    # repair makes it 0600 again; the secrets are kept
    assert store.repair() is True
    assert mode(store.path) == 0o600
    assert store.get("Nightly").reveal() == PASSWORD
    assert store.repair() is False


def test_group_readable_file_refused_and_rewritten_0600_on_set(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.secrets")
    store.set("A", "one")
    os.chmod(store.path, 0o640)
    with pytest.raises(SecretStoreError):
        store.get("A")
    store.set("B", "two")   # a write by its owner puts it back to 0600, keeping A
    assert mode(store.path) == 0o600
    assert store.get("A").reveal() == "one" and store.get("B").reveal() == "two"


def test_symlink_refused(tmp_path: Path) -> None:
    real = SecretStore(tmp_path / "real.secrets")
    real.set("A", "one")
    link = tmp_path / "link.secrets"
    link.symlink_to(real.path)
    with pytest.raises(SecretStoreError):
        SecretStore(link).get("A")


def test_damaged_file_refused_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "s.secrets"
    path.write_text('{"jobs": {"A": "' + PASSWORD + '"')   # cut short
    os.chmod(path, 0o600)
    with pytest.raises(SecretStoreError) as err:
        SecretStore(path).get("A")
    assert "damaged" in str(err.value) and PASSWORD not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_secret_is_masked_everywhere_it_could_leak(caplog) -> None:
    s = Secret(PASSWORD)
    assert repr(s) == f"Secret({MASK!r})"
    assert str(s) == MASK and f"{s}" == MASK and f"{s!r}" != PASSWORD and "%s" % s == MASK
    assert PASSWORD not in repr([s, {"pw": s}])
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("password is %s (%r)", s, s)
    assert PASSWORD not in caplog.text
    try:
        raise RuntimeError(f"login failed with {s}")
    except RuntimeError as exc:
        assert PASSWORD not in str(exc)
    assert s.reveal() == PASSWORD and reveal(s) == PASSWORD and reveal(PASSWORD) == PASSWORD
    assert reveal(None) is None
    assert bool(s) and not Secret("")
    assert Secret(PASSWORD) == s and Secret(s) == s
    import pickle
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_mask_hides_the_length_too() -> None:
    assert mask("a") == mask("a much longer password") == MASK
    assert mask(Secret("x")) == MASK
    assert mask("") == "" and mask(None) == ""


def test_masked_for_the_console(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.secrets")
    assert store.masked("A") == ""
    store.set("A", PASSWORD)
    assert store.masked("A") == MASK
    assert PASSWORD not in repr(store)


def test_rename_carries_the_secret(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "s.secrets")
    store.set("Old", PASSWORD)
    store.rename("Old", "New")
    assert store.get("Old") is None and store.get("New").reveal() == PASSWORD


def test_folder_made_private_when_created(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "new" / "s.secrets")
    store.set("A", "x")
    assert mode(store.path.parent) & 0o077 == 0
