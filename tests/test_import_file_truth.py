"""Issue 14 items 7 and 12: the import file itself tells the truth.

- A file that changes while it is read (cut short, rewritten, replaced, or changed after its
  last block but before COMMIT) fails the import, changes nothing, and says what changed. The
  change is made from a hook between the reader's blocks (`RowReader.on_block`) or between
  the writer's chunks (`_Import.apply`): no timing.
- A file starting with NUL bytes (a 2 GB sparse file too) gets a sentence naming the file and
  byte offset, read from its first block only.
- CR-only line endings are read; a directory, a symbolic link loop and a FIFO each say what
  they are (and a FIFO never blocks); a NUL byte in one record skips that record only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from patron_tui.cli import main
from patron_tui.runs import RunEngine
from patron_tui.services.imports import engine as engine_mod
from patron_tui.services.imports.engine import run_import
from patron_tui.services.imports.records import ImportFileError, RowReader
from patron_tui.services.imports.summary import load_summary
from patron_tui.store import Store
from tests.conftest import allow_login, district
from tests.jobs_helpers import HEADER, PROPS

ROOT = Path(__file__).resolve().parent.parent

RUN_AGAIN = "nothing was imported. Run it again when the file is complete."


def rows(n: int, start: int = 0) -> str:
    return "".join(f"N{i:05d},NB{i:05d},Newman{i},Nia{i},HS\n" for i in range(start, start + n))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = district(tmp_path / "district.db", [
        {"district_id": "D1", "barcode": "B1", "last_name": "Able", "first_name": "Ann", "site": "HS"},
        {"district_id": "D2", "barcode": "B2", "last_name": "Baker", "first_name": "Bob", "site": "ELM"},
    ])
    return st


@pytest.fixture
def engine(store: Store):
    eng = RunEngine(store, pool_size=2)
    yield eng
    eng.shutdown()


@pytest.fixture
def props(tmp_path: Path) -> Path:
    p = tmp_path / "in.properties"
    p.write_text(PROPS, encoding="utf-8")
    return p


def state(store: Store) -> tuple:
    """Everything an import could change: patrons, journal rows, conflicts."""
    conn = store.connect()
    try:
        patrons = [tuple(r) for r in conn.execute("SELECT * FROM patrons ORDER BY id")]
        journal = conn.execute("SELECT count(*) FROM change_journal").fetchone()[0]
        conflicts = conn.execute("SELECT count(*) FROM import_conflicts").fetchone()[0]
    finally:
        conn.close()
    return patrons, journal, conflicts


def run(engine: RunEngine, path: Path, props: Path, **kw):
    return engine.execute("import", "Import", lambda ctx: run_import(ctx, path=path, properties_path=props, **kw))


def hook_reader(monkeypatch, action) -> list[int]:
    """The import's RowReader calls `action(path)` once, after its first block: between
    reading blocks, while more of the file is still to come."""
    calls: list[int] = []

    class Hooked(RowReader):
        def open(self):
            if self.on_block is None:
                def once() -> None:
                    if not calls:
                        calls.append(self.bytes_read)
                        action(self.path)
                self.on_block = once
            return super().open()

    monkeypatch.setattr(engine_mod, "RowReader", Hooked)
    return calls


def hook_apply(monkeypatch, path: Path, action, *, before: bool) -> list[int]:
    """The import's writer calls `action(path)` once, at its first chunk: before applying it
    (`before`) or after (applied, not yet committed). Returns [the file's size just after]."""
    original = engine_mod._Import.apply
    sizes: list[int] = []

    def act() -> None:
        action(path)
        sizes.append(path.stat().st_size)

    def apply(self, writer, chunk):
        if before and not sizes:
            act()
        original(self, writer, chunk)
        if not before and not sizes:
            act()

    monkeypatch.setattr(engine_mod._Import, "apply", apply)
    return sizes


def changed_size(path: Path, before: int, after: int) -> str:
    """The run's sentence for a file whose size changed while it was read."""
    return f"{path}: changed while it was read (size {before:,} → {after:,} bytes); {RUN_AGAIN}"


def import_three(store: Store, engine: RunEngine, props: Path, path: Path, data: bytes) -> tuple[dict, list]:
    """Import `data` (three records, one of them to be skipped) written to `path`: it succeeds
    with 3 read, 2 added, 1 skipped; ({district id: last name} of the N patrons, the skipped
    records' messages)."""
    path.write_bytes(data)
    handle = run(engine, path, props)
    assert handle.status.value == "succeeded", handle.error
    s = handle.summary
    assert (s["read"], s["added"], s["skipped"]) == (3, 2, 1)
    conn = store.connect()
    try:
        names = dict(conn.execute("SELECT district_id, last_name FROM patrons WHERE district_id LIKE 'N%'"))
        skipped = [m for m in load_summary(conn, handle.run_id)["messages"] if m["level"] == "skipped"]
    finally:
        conn.close()
    return names, skipped


def cut_short(path: Path) -> None:
    """Truncate the file in the middle of a row (as an SIS export still being written, or an
    operator's Ctrl+C of a copy)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2 + 7)


# --- item 7: the file changed while it was read -------------------------------------------------


def test_a_file_cut_short_while_it_is_read_fails_and_changes_nothing(store, engine, props, tmp_path, monkeypatch):
    path = tmp_path / "in.csv"
    path.write_text(HEADER + rows(3000), encoding="utf-8")        # ~100 KB: several 32 KiB blocks
    before_size = path.stat().st_size
    before = state(store)
    calls = hook_reader(monkeypatch, cut_short)
    handle = run(engine, path, props, process=False)
    assert calls, "the hook ran between blocks"
    after_size = path.stat().st_size
    assert handle.status.value == "failed"
    assert handle.error == changed_size(path, before_size, after_size)
    assert state(store) == before                                  # not one row of the file stored


def test_a_file_replaced_while_it_is_read_fails(store, engine, props, tmp_path, monkeypatch):
    path = tmp_path / "in.csv"
    path.write_text(HEADER + rows(3000), encoding="utf-8")
    before = state(store)

    def replace(p: Path) -> None:   # the SIS writes a new export and renames it over the old one
        new = p.with_name("new.csv")
        new.write_text(HEADER + rows(10, start=5000), encoding="utf-8")
        os.replace(new, p)

    hook_reader(monkeypatch, replace)
    handle = run(engine, path, props, process=False)
    assert handle.status.value == "failed"
    assert handle.error == f"{path}: changed while it was read (it was replaced by another file); {RUN_AGAIN}"
    assert state(store) == before


def test_a_change_after_the_last_block_is_caught_at_the_commit_point(store, engine, props, tmp_path, monkeypatch):
    """One chunk: the reader has reached the end of the file (its own check passed) before the
    writer applies the chunk; the file grows then, before COMMIT."""
    path = tmp_path / "in.csv"
    path.write_text(HEADER + rows(200), encoding="utf-8")
    before_size = path.stat().st_size
    before = state(store)

    def grow(p: Path) -> None:
        with open(p, "a", encoding="utf-8") as f:
            f.write(rows(1, start=9000))

    grown = hook_apply(monkeypatch, path, grow, before=False)
    handle = run(engine, path, props, process=False)
    assert grown
    assert handle.status.value == "failed"
    assert handle.error == changed_size(path, before_size, grown[0])
    assert state(store) == before


def test_a_file_cut_short_under_the_mapping_process_fails_too(store, engine, props, tmp_path, monkeypatch):
    """A big Full import reads in a second process: the file is cut after the first chunk came
    back. Whether the child was still reading (its own end-of-file check) or had finished (the
    run thread's check at the commit point), the run fails and nothing changes."""
    path = tmp_path / "in.csv"
    path.write_text(HEADER + rows(3000), encoding="utf-8")
    before_size = path.stat().st_size
    before = state(store)
    cut = hook_apply(monkeypatch, path, cut_short, before=True)
    handle = run(engine, path, props, process=True, chunk_size=500)
    assert cut
    assert handle.status.value == "failed"
    assert handle.error == changed_size(path, before_size, cut[0])
    assert state(store) == before


def test_cli_import_of_a_file_cut_short_exits_2_with_one_sentence(store, props, tmp_path, monkeypatch, capsys):
    allow_login(store)
    path = tmp_path / "in.csv"
    path.write_text(HEADER + rows(3000), encoding="utf-8")
    before_size = path.stat().st_size
    before = state(store)
    hook_reader(monkeypatch, cut_short)
    code = main(["import", str(path), "--properties", str(props), "--db", str(store.path)])
    out, err = capsys.readouterr()
    assert code == 2                                                     # the import's failure code
    assert "Traceback" not in err and "Traceback" not in out
    assert f"patron-tui: {changed_size(path, before_size, path.stat().st_size)}" in err.splitlines()
    assert ": failed: " in out and "succeeded" not in out
    assert state(store) == before


# --- item 7: a file that starts with NUL bytes -------------------------------------------------


def _rchar() -> int | None:
    try:
        with open("/proc/self/io", encoding="ascii") as f:
            return int(next(ln for ln in f if ln.startswith("rchar:")).split()[1])
    except (OSError, StopIteration, ValueError):
        return None


def test_a_sparse_two_gigabyte_file_is_refused_from_its_first_block(store, engine, props, tmp_path):
    path = tmp_path / "sparse.csv"
    with open(path, "wb") as f:
        f.truncate(2 * 1024**3)                                   # NUL bytes all the way, no disk used
    before = state(store)
    read_before = _rchar()
    handle = run(engine, path, props)
    read_after = _rchar()
    assert handle.status.value == "failed"
    assert handle.error == (f"{path}: starts with NUL bytes at byte offset 0 (all of the first 65,536 bytes "
                            "are NUL): not a text CSV file (a sparse or unfinished file?)")
    assert "UTF-16" not in handle.error and "BOM" not in handle.error
    if read_before is not None and read_after is not None:
        assert read_after - read_before < 64 * 1024**2              # not the 2 GB: its first block
    assert state(store) == before


def test_a_file_starting_with_nul_bytes_is_named_by_import_and_convert(store, props, tmp_path):
    allow_login(store)
    path = tmp_path / "unfinished.csv"
    path.write_bytes(b"\x00" * 1000 + (HEADER + rows(3)).encode())
    expected = (f"starts with NUL bytes at byte offset 0 (bytes 0 to 999 are NUL): not a text CSV file "
                "(a sparse or unfinished file?)")
    for argv in (["import", str(path), "--properties", str(props), "--db", str(store.path)],
                 ["convert", str(path), "--out", str(tmp_path / "out.properties")]):
        proc = subprocess.run([sys.executable, "-m", "patron_tui", *argv], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert f"patron-tui: {path}: {expected}" in proc.stderr.splitlines(), proc.stderr
    assert not (tmp_path / "out.properties").exists()


# --- item 12: CR-only line endings --------------------------------------------------------------


def test_cr_only_line_endings_are_read_as_lines(store, engine, props, tmp_path):
    text = HEADER + "N1,NB1,Newman,Nia,HS\n" + "N2,NB2,,Nobody,HS\n" + 'N3,NB3,"Old, Mac",Otto,HS\n'
    names, skipped = import_three(store, engine, props, tmp_path / "oldmac.csv",
                                  text.replace("\n", "\r").encode("utf-8"))
    assert names == {"N1": "Newman", "N3": "Old, Mac"}
    assert [(m["line"], m["code"]) for m in skipped] == [(3, "missing_required")]


# --- item 12: a directory, a symbolic link loop, a FIFO -----------------------------------------


def _not_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    folder = tmp_path / "exports"
    folder.mkdir()
    loop = tmp_path / "loop.csv"
    os.symlink(tmp_path / "loop2.csv", loop)
    os.symlink(loop, tmp_path / "loop2.csv")
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    return {
        "directory": (folder, "is a directory, not a CSV file"),
        "loop": (loop, "is a symbolic link loop (following its links never reaches a file)"),
        "fifo": (fifo, "is not a regular file (a FIFO)"),
    }


@pytest.mark.parametrize("kind", ["directory", "loop", "fifo"])
def test_a_path_that_is_not_a_file_says_what_it_is(store, engine, props, tmp_path, kind):
    from patron_tui.ui.screens.import_run import check_csv

    allow_login(store)
    path, what = _not_files(tmp_path)[kind]
    handle = run(engine, path, props)
    assert handle.status.value == "failed" and handle.error == f"{path}: {what}"
    assert check_csv(str(path)) == (None, f"CSV file {path}: {what}.")        # the Import screen
    for argv in (["import", str(path), "--properties", str(props), "--db", str(store.path)],
                 ["convert", str(path), "--out", str(tmp_path / "out.properties")]):
        proc = subprocess.run([sys.executable, "-m", "patron_tui", *argv], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr and "no such file" not in proc.stderr
        assert proc.stderr.splitlines() == [f"patron-tui: {path}: {what}"], proc.stderr


def test_reading_a_fifo_never_blocks(tmp_path):
    """The converter's sniff and the reader open the path themselves (a FIFO may be swapped in
    after a look): they refuse it at once. Should one block, the test unblocks it by opening
    the FIFO's other end and fails."""
    from patron_tui.services.imports.converter import sniff
    from patron_tui.services.imports.properties import parse_properties

    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    mapping = parse_properties(PROPS)
    for attempt in (lambda: sniff(fifo), lambda: RowReader(fifo, mapping).open()):
        done = threading.Event()
        outcome: list[BaseException | None] = []

        def go() -> None:
            try:
                attempt()
                outcome.append(None)
            except BaseException as exc:   # noqa: BLE001 - handed to the test thread
                outcome.append(exc)
            done.set()

        threading.Thread(target=go, daemon=True).start()
        if not done.wait(60):
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)   # a writer: the blocked open returns
            os.close(fd)
            done.wait(60)
            pytest.fail("opening a FIFO blocked")
        (exc,) = outcome
        assert isinstance(exc, ImportFileError) and str(exc) == f"{fifo}: is not a regular file (a FIFO)"


def test_the_directory_job_source_says_what_the_path_is(tmp_path):
    from patron_tui.services.jobs.directory import check_directory, fetch_directory
    from patron_tui.services.jobs.model import Job
    from patron_tui.services.jobs.sources import SourceError

    paths = _not_files(tmp_path)
    for path, what in paths.values():
        job = Job(name="Students", source="directory", path=str(path), properties_path=str(tmp_path / "p"))
        checks = check_directory(job)
        assert checks[-1].ok is False and checks[-1].sentence == f"{path}: {what} (field: path).", checks
        with pytest.raises(SourceError) as info:
            fetch_directory(job, tmp_path / "staging", settle_seconds=0)
        assert str(info.value) == f"{path}: {what} (job 'Students', field: path)"


# --- item 12: one NUL byte in a record ----------------------------------------------------------


def test_one_nul_byte_skips_that_record_only(store, engine, props, tmp_path):
    data = (HEADER + "N1,NB1,Newman,Nia,HS\n").encode() + b"N2,NB2,Nu\x00ll,Ned,HS\n" + b"N3,NB3,Third,Tia,HS\n"
    names, skipped = import_three(store, engine, props, tmp_path / "in.csv", data)
    assert set(names) == {"N1", "N3"}
    offset = data.index(b"\x00")
    assert [(m["line"], m["code"], m["text"]) for m in skipped] == [(
        3, "binary_data",
        f"line 3: column 'Last' holds a NUL byte (byte offset {offset} of in.csv): binary data, not text; "
        "the record was skipped and the rest of the file read",
    )]


def test_the_directory_job_source_notices_a_file_replaced_while_it_is_copied(tmp_path, monkeypatch):
    """Same size, same modification time, another file (the SIS renamed a new export over the
    old one while the job copied it): the inode tells them apart."""
    from patron_tui.services.jobs import directory
    from patron_tui.services.jobs.model import Job
    from patron_tui.services.jobs.sources import SourceError

    path = tmp_path / "students.csv"
    path.write_text(HEADER + rows(50), encoding="utf-8")
    st = path.stat()
    real_copy = directory.shutil.copyfile

    def copy_then_replace(src, dst):
        real_copy(src, dst)
        new = tmp_path / "new.csv"
        new.write_text((HEADER + rows(50)).replace("Newman7,", "Neuman7,"), encoding="utf-8")   # same length
        assert new.stat().st_size == st.st_size
        os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(new, path)

    monkeypatch.setattr(directory.shutil, "copyfile", copy_then_replace)
    job = Job(name="Students", source="directory", path=str(path), properties_path=str(tmp_path / "p"))
    with pytest.raises(SourceError) as info:
        directory.fetch_directory(job, tmp_path / "staging", settle_seconds=0)
    assert str(info.value) == f"{path}: the file changed while it was being copied; the job did not import it"
    assert not (tmp_path / "staging" / "students.csv").exists()


def test_the_converter_screen_names_a_file_starting_with_nul_bytes(tmp_path):
    from patron_tui.ui.screens.converter import _looks_binary, sniff_file

    path = tmp_path / "unfinished.csv"
    path.write_bytes(b"\x00" * 1000 + (HEADER + rows(3)).encode())
    assert not _looks_binary(path)                 # not "not a text file": sniff says what it is
    with pytest.raises(ValueError) as info:
        sniff_file(path)
    assert str(info.value) == (f"{path}: starts with NUL bytes at byte offset 0 (bytes 0 to 999 are NUL): "
                               "not a text CSV file (a sparse or unfinished file?)")


@pytest.mark.parametrize("alias", ["utf16", "U16", "UTF-16"])
def test_a_utf16_alias_is_not_taken_for_a_file_starting_with_nul_bytes(tmp_path, alias):
    """UTF-16-BE text begins with a NUL byte after its byte order mark; under any name codecs
    gives UTF-16 (utf16, u16...), the converter reads it instead of calling it a sparse file."""
    import codecs

    from patron_tui.services.imports.converter import sniff

    path = tmp_path / "be.csv"
    path.write_bytes(codecs.BOM_UTF16_BE + HEADER.encode("utf-16-be"))
    assert sniff(path, encoding=alias).header == HEADER.strip().split(",")
