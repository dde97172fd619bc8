"""Batch Update Patron Profile (services/batch.py): blank means unchanged, Nightly Debug always
applied, missing profiles created, refused patrons reported while the others are updated,
spaced Next Service Dates, the permission, preview = process, the journal, rollback."""

from __future__ import annotations

import json
from datetime import date

import pytest
from pydantic import ValidationError

from patron_tui.models import EventKind
from patron_tui.runs import RunEngine
from patron_tui.services import batch
from patron_tui.services.permissions import PermissionDenied, may_use_batch_tools, require_batch_tools
from patron_tui.services.query_sets import delete_set, save_set
from patron_tui.store import ChangesetWriter
from patron_tui.store.changeset import decode_image

from .batch_helpers import PROFILE_COLUMNS, build, dump, profiles, run_batch

GRADE5 = "grade = 5"          # P01..P06, all with a DB profile
IN_GRADE5 = [f"P{i:02d}" for i in range(1, 7)]

#: one value per optional field, each different from every starting value
FIELD_VALUES = {
    "status_of_service": "Restricted",
    "max_items_out": 11,
    "items_per_shipment": 6,
    "service_frequency": "Quarterly",
    "next_service_date": date(2027, 1, 4),
    "duplication_circulation": None,   # set per starting value below
    "auto_select": None,
    "queue_length": 40,
}


@pytest.fixture
def store(tmp_path):
    return build(tmp_path / "district.db")


def _stored(field, value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


@pytest.mark.parametrize("field", [*FIELD_VALUES, "add_subjects", "fill_service_queues"])
def test_a_blank_field_changes_nothing_only_the_one_given_changes(store, field):
    conn = store.connect()
    before = profiles(conn)
    others = dump(conn, "profile_subjects", "queue_fill_requests", "service_queue")
    # every patron of the set keeps Nightly Debug as it is only if we pass each its own value:
    # instead give a set whose Nightly Debug is all off, and nightly_debug=False
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for p in before.values():
            w.update("patron_profiles", p["id"], {"nightly_debug": 0})
    before = profiles(conn)
    if field in ("duplication_circulation", "auto_select"):
        value = True if field == "duplication_circulation" else False
    elif field == "add_subjects":
        value = ["POE"]
    elif field == "fill_service_queues":
        value = True
    else:
        value = FIELD_VALUES[field]
    handle = run_batch(store, batch.BatchUpdate(medium="DB", nightly_debug=False, **{field: value}),
                       statement=GRADE5)
    assert handle.status.value == "succeeded", handle.error
    after = profiles(conn)
    assert set(after) == set(before)   # no profile created or removed
    for barcode, old in before.items():
        new = after[barcode]
        for col in PROFILE_COLUMNS:
            if col == field and barcode in IN_GRADE5:
                assert new[col] == _stored(field, value), (barcode, col)
            else:
                assert new[col] == old[col], (barcode, col)
    subjects = dump(conn, "profile_subjects")["profile_subjects"]
    if field == "add_subjects":
        with_poe = {pid for pid, s in subjects if s == "POE"}
        assert with_poe == {before[b]["id"] for b in IN_GRADE5}
        assert [r for r in subjects if r[1] != "POE"] == others["profile_subjects"]
    else:
        assert subjects == others["profile_subjects"]
    requests = conn.execute("SELECT profile_id FROM queue_fill_requests ORDER BY profile_id").fetchall()
    if field == "fill_service_queues":
        assert [r[0] for r in requests] == sorted(before[b]["id"] for b in IN_GRADE5)
    else:
        assert requests == []
    assert dump(conn, "service_queue") == {"service_queue": others["service_queue"]}
    conn.close()


def test_nothing_given_changes_only_nightly_debug(store):
    conn = store.connect()
    before = profiles(conn)
    handle = run_batch(store, batch.BatchUpdate(medium="DB"), statement=GRADE5)
    after = profiles(conn)
    assert handle.summary["profiles_updated"] == sum(before[b]["nightly_debug"] == 1 for b in IN_GRADE5) == 3
    for b in before:
        expected = {**before[b], "nightly_debug": 0} if b in IN_GRADE5 else before[b]
        assert after[b] == expected


@pytest.mark.parametrize("flag", [True, False], ids=["on", "off"])
def test_nightly_debug_is_always_applied_as_given(store, flag):
    conn = store.connect()
    before = profiles(conn)
    assert {before[b]["nightly_debug"] for b in IN_GRADE5} == {0, 1}   # mixed starting values
    handle = run_batch(store, batch.BatchUpdate(medium="DB", nightly_debug=flag, max_items_out=None),
                       statement=GRADE5)
    assert handle.status.value == "succeeded"
    after = profiles(conn)
    assert {b: after[b]["nightly_debug"] for b in IN_GRADE5} == {b: int(flag) for b in IN_GRADE5}
    assert {b: after[b]["nightly_debug"] for b in ("P07", "P08")} == {b: before[b]["nightly_debug"]
                                                                     for b in ("P07", "P08")}
    changed = sum(before[b]["nightly_debug"] != int(flag) for b in IN_GRADE5)
    assert handle.summary["profiles_updated"] == changed
    assert handle.summary["unchanged"] == len(IN_GRADE5) - changed


def test_patrons_without_a_profile_of_the_medium_get_one_with_the_defaults(store):
    conn = store.connect()
    lp_before = profiles(conn, "LP")
    handle = run_batch(store, batch.BatchUpdate(medium="DB", max_items_out=8, nightly_debug=True),
                       statement="grade = 6")   # P07, P08 have DB profiles; P09, P10 do not
    assert handle.status.value == "succeeded"
    s = handle.summary
    assert (s["patrons"], s["profiles_created"], s["profiles_updated"], s["errors"]) == (4, 2, 2, 0)
    after = profiles(conn)
    defaults = {"status_of_service": "Active", "items_per_shipment": 1, "service_frequency": "Weekly",
                "next_service_date": None, "duplication_circulation": 0, "auto_select": 1, "queue_length": 20}
    for b in ("P09", "P10"):
        assert {c: after[b][c] for c in defaults} == defaults
        assert (after[b]["max_items_out"], after[b]["nightly_debug"], after[b]["medium"]) == (8, 1, "DB")
    assert profiles(conn, "LP") == lp_before   # the other medium's profile is another profile
    inserted = {int(r[0]) for r in conn.execute(
        "SELECT row_key FROM change_journal WHERE run_id = ? AND table_name = 'patron_profiles' AND op = 'insert'",
        (handle.run_id,))}
    assert inserted == {after["P09"]["id"], after["P10"]["id"]}


def test_a_refused_patron_does_not_stop_the_others_and_is_in_the_error_report(store):
    conn = store.connect()
    before = profiles(conn)
    p03 = conn.execute("SELECT id FROM patrons WHERE barcode = 'P03'").fetchone()[0]
    p09 = conn.execute("SELECT id FROM patrons WHERE barcode = 'P09'").fetchone()[0]
    # the state office locked one patron's profile; another patron may not get a new profile
    conn.execute(f"CREATE TRIGGER locked BEFORE UPDATE ON patron_profiles WHEN NEW.patron_id = {p03}"
                 " BEGIN SELECT RAISE(ABORT, 'profile locked by the state office'); END")
    conn.execute(f"CREATE TRIGGER no_new BEFORE INSERT ON patron_profiles WHEN NEW.patron_id = {p09}"
                 " BEGIN SELECT RAISE(ABORT, 'no new profiles for this patron'); END")
    handle = run_batch(store, batch.BatchUpdate(medium="DB", max_items_out=12, add_subjects=["POE"],
                                                fill_service_queues=True), statement="")
    assert handle.status.value == "succeeded", handle.error
    s = handle.summary
    assert (s["patrons"], s["errors"], s["profiles_created"], s["profiles_updated"]) == (10, 2, 1, 7)
    report = batch.errors(conn, handle.run_id)
    assert [b for b, _ in report] == ["P03", "P09"]
    assert "profile locked by the state office" in report[0][1] and "Baker, Cy" in report[0][1]
    assert "no new profiles for this patron" in report[1][1]
    after = profiles(conn)
    assert after["P03"] == before["P03"] and "P09" not in after
    assert all(after[b]["max_items_out"] == 12 for b in after if b != "P03")
    # nothing else of the refused patrons was applied either (one patron = all or nothing)
    assert not conn.execute("SELECT 1 FROM profile_subjects WHERE profile_id = ? AND subject = 'POE'",
                            (before["P03"]["id"],)).fetchone()
    assert not conn.execute("SELECT 1 FROM queue_fill_requests WHERE profile_id = ?",
                            (before["P03"]["id"],)).fetchone()
    # every updated profile has its before-image, the refused one none
    journal = {int(r["row_key"]): r for r in conn.execute(
        "SELECT row_key, before FROM change_journal WHERE run_id = ? AND table_name = 'patron_profiles'"
        " AND op = 'update'", (handle.run_id,))}
    changed = {before[b]["id"] for b in before if b != "P03" and before[b]["max_items_out"] != 12}
    assert set(journal) == changed
    for b in before:
        if before[b]["id"] in journal:
            assert decode_image(journal[before[b]["id"]]["before"])["max_items_out"] == before[b]["max_items_out"]
    levels = [r[0] for r in conn.execute("SELECT level FROM run_messages WHERE run_id = ? AND barcode = 'P03'",
                                         (handle.run_id,))]
    assert levels == ["error"]


def _dates(conn, barcodes):
    got = profiles(conn)
    return [got[b]["next_service_date"] for b in barcodes]


def test_spaced_next_service_dates_by_last_name_ties_by_patron_id(store):
    conn = store.connect()
    spacing = batch.Spacing(start=date(2026, 1, 5), every_days=7, group_size=3, order_by="last_name")
    handle = run_batch(store, batch.BatchUpdate(medium="DB", spacing=spacing), statement="")
    assert handle.status.value == "succeeded"
    # last names, ignoring case: Abel(P05) adams(P02) Baker(P01) Baker(P03, later id) Cole(P04)
    # Dunn(P06) Evans(P07) Fox(P08) Gray(P09, created) Hale(P10, created)
    order = ["P05", "P02", "P01", "P03", "P04", "P06", "P07", "P08", "P09", "P10"]
    expected = ["2026-01-05"] * 3 + ["2026-01-12"] * 3 + ["2026-01-19"] * 3 + ["2026-01-26"]
    assert _dates(conn, order) == expected


def test_spaced_next_service_dates_by_barcode_groups_of_four(store):
    conn = store.connect()
    spacing = batch.Spacing(start=date(2026, 12, 28), every_days=10, group_size=4, order_by="barcode")
    run_batch(store, batch.BatchUpdate(medium="DB", spacing=spacing), statement=GRADE5)
    assert _dates(conn, IN_GRADE5) == ["2026-12-28"] * 4 + ["2027-01-07"] * 2
    assert _dates(conn, ["P07", "P08"]) == ["2026-10-15", None]   # outside the set


def test_spacing_and_a_fixed_date_together_is_refused():
    with pytest.raises(ValidationError, match="not both"):
        batch.BatchUpdate(medium="DB", next_service_date=date(2026, 1, 1),
                          spacing=batch.Spacing(start=date(2026, 1, 1), every_days=1, group_size=1))
    with pytest.raises(ValidationError, match="medium is required"):
        batch.BatchUpdate(medium="  ")


def test_unknown_medium_or_subject_is_refused_with_a_sentence(store):
    conn = store.connect()
    tgt = batch.target(conn, statement="")
    with pytest.raises(batch.BatchError, match="no medium 'XX'"):
        batch.preview(conn, tgt, batch.BatchUpdate(medium="XX"))
    engine = RunEngine(store, pool_size=1)
    try:
        with pytest.raises(batch.BatchError, match="no subject 'NOPE'"):
            batch.start_batch_update(engine, store, store.operator, tgt,
                                     batch.BatchUpdate(medium="db", add_subjects=["NOPE"]))
    finally:
        engine.shutdown()
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


def test_permission(store):
    conn = store.connect()
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        for login, level, may in (("clerk", 5, 0), ("batcher", 5, 1), ("admin", 0, 0)):
            w.insert("operators", {"login_name": login, "security_level": level, "may_use_batch_tools": may,
                                   "created_at": "2026-01-01T00:00:00Z"})
    assert [may_use_batch_tools(conn, x) for x in ("clerk", "batcher", "admin", "tester", "stranger")] == \
        [False, True, True, True, False]
    with pytest.raises(PermissionDenied, match="'stranger'.*not in the operators table.*may use batch tools"):
        require_batch_tools(conn, "stranger")
    before = dump(conn)
    for login in ("clerk", "stranger"):
        with pytest.raises(PermissionDenied, match=f"'{login}'.*\"may use batch tools\""):
            run_batch(store, batch.BatchUpdate(medium="DB", max_items_out=1), operator=login)
    assert dump(conn) == before and conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    # the run checks again: a store whose operator may not (the run's operator) fails, changing nothing
    store.operator = "clerk"
    engine = RunEngine(store, pool_size=1)
    try:
        tgt = batch.target(conn, statement="")
        handle = engine.execute("batch_update", "t", lambda ctx: batch.run_batch_update(
            ctx, tgt, batch.BatchUpdate(medium="DB", max_items_out=1)))
    finally:
        engine.shutdown()
    assert handle.status.value == "failed" and "may use batch tools" in handle.error
    assert dump(conn) == before
    store.operator = "batcher"
    assert run_batch(store, batch.BatchUpdate(medium="DB", max_items_out=1)).status.value == "succeeded"


def test_preview_counts_match_what_process_changes(store):
    conn = store.connect()
    save_set(conn, "tester", "Readers", "")
    update = batch.BatchUpdate(medium="DB", status_of_service="Active", max_items_out=3, nightly_debug=True,
                               add_subjects=["MYS"], fill_service_queues=True)
    tgt = batch.target(conn, set_name="readers")
    assert (tgt.set_name, tgt.count) == ("Readers", 10)
    pv = batch.preview(conn, tgt, update, samples=2)
    fields = {f.field: f for f in pv.fields}
    assert list(fields) == ["status_of_service", "max_items_out", "nightly_debug", "subjects"]
    assert (pv.patrons, pv.profiles_created, pv.queues_to_fill) == (10, 2, 10)
    assert any("Nightly Debug is always applied" in n for n in pv.notes)
    sample = fields["status_of_service"].samples[0]
    assert sample == ("P02", "adams, Bo", "Suspended", "Active")   # ordered by name
    assert len(fields["max_items_out"].samples) == 2
    before = profiles(conn)
    handle = run_batch(store, update, set_name="Readers")
    s = handle.summary
    assert (s["patrons"], s["profiles_created"], s["queues_queued"]) == (10, 2, 10)
    after = profiles(conn)
    for col in ("status_of_service", "max_items_out", "nightly_debug"):
        assert fields[col].changes == sum(before[b][col] != after[b][col] for b in before), col
    gained = conn.execute(
        "SELECT count(*) FROM change_journal WHERE run_id = ? AND table_name = 'profile_subjects'",
        (handle.run_id,)).fetchone()[0]
    assert fields["subjects"].changes == gained - 2   # the created profiles gain it too
    assert s["profiles_updated"] == sum(before[b] != after[b] for b in before)
    # a preview after the process finds nothing left to change but Nightly Debug's note
    again = batch.preview(conn, tgt, update)
    assert [f.changes for f in again.fields] == [0, 0, 0, 0] and again.profiles_created == 0
    assert again.queues_to_fill == 0   # every queue is waiting already


def test_every_changed_profile_has_a_before_image_and_an_after_image(store):
    conn = store.connect()
    before = profiles(conn)
    update = batch.BatchUpdate(medium="DB", status_of_service="Restricted", queue_length=9,
                               next_service_date=date(2026, 3, 2))
    handle = run_batch(store, update)
    rows = conn.execute("SELECT row_key, operator, before, after FROM change_journal WHERE run_id = ?"
                        " AND table_name = 'patron_profiles' AND op = 'update'", (handle.run_id,)).fetchall()
    assert len(rows) == len(before) == handle.summary["profiles_updated"]
    by_id = {p["id"]: p for p in before.values()}
    for r in rows:
        old, new = decode_image(r["before"]), decode_image(r["after"])
        p = by_id[int(r["row_key"])]
        assert old == {c: p[c] for c in ("status_of_service", "queue_length", "next_service_date", "nightly_debug")}
        assert new == {"status_of_service": "Restricted", "queue_length": 9, "next_service_date": "2026-03-02",
                       "nightly_debug": 0}
        assert r["operator"] == "tester"


def test_a_cancelled_batch_leaves_the_database_as_it_was(store):
    conn = store.connect()
    before = dump(conn)
    engine = RunEngine(store, pool_size=1)
    cancelled = []

    def cancel_when_applying(event):   # the run's first info comes inside its transaction
        if event.kind is EventKind.INFO and not cancelled:
            cancelled.append(event.run_id)
            engine.cancel(event.run_id)

    engine.subscribe(cancel_when_applying)
    try:
        handle = run_batch(store, batch.BatchUpdate(medium="DB", max_items_out=1, add_subjects=["POE"],
                                                    fill_service_queues=True), engine=engine)
    finally:
        engine.shutdown()
    assert handle.status.value == "cancelled"
    assert dump(conn) == before


def test_the_set_is_resolved_at_process_time_and_a_vanished_set_fails_cleanly(store):
    conn = store.connect()
    save_set(conn, "tester", "Fifth", GRADE5)
    tgt = batch.target(conn, set_name="Fifth")
    delete_set(conn, "tester", "Fifth")
    before = dump(conn)
    engine = RunEngine(store, pool_size=1)
    try:
        handle = batch.start_batch_update(engine, store, "tester", tgt, batch.BatchUpdate(medium="DB"))
        handle.wait(30)
    finally:
        engine.shutdown()
    assert handle.status.value == "failed" and "No query set 'Fifth'" in handle.error
    assert dump(conn) == before
    with pytest.raises(batch.BatchError, match="does not compile"):
        batch.target(conn, statement="grade = = 5")


def test_update_where_journals_blobs_as_hex_and_per_row_values(store):
    conn = store.connect()
    conn.execute("UPDATE patrons SET picture = x'00ff10' WHERE barcode = 'P01'")
    ids = [r[0] for r in conn.execute("SELECT id FROM patrons WHERE barcode IN ('P01', 'P02') ORDER BY id")]
    conn.execute("CREATE TEMP TABLE k (k INTEGER PRIMARY KEY, home TEXT)")
    conn.executemany("INSERT INTO temp.k VALUES (?, ?)", [(i, f"Room {i}") for i in ids])
    with ChangesetWriter(conn, operator="tester", run_id=None) as w:
        assert w.update_where("patrons", {"picture": None}, keys="k", values={"homeroom": "home"}) == 2
        assert w.update_where("patrons", {"picture": None}, keys="k", values={"homeroom": "home"}) == 0
    rows = conn.execute("SELECT row_key, before, after FROM change_journal WHERE table_name = 'patrons'"
                        " AND op = 'update' ORDER BY id").fetchall()
    assert [int(r["row_key"]) for r in rows] == ids
    assert decode_image(rows[0]["before"]) == {"picture": b"\x00\xff\x10", "homeroom": ""}
    assert json.loads(rows[0]["after"]) == {"picture": None, "homeroom": f"Room {ids[0]}"}
    assert [r[0] for r in conn.execute("SELECT homeroom FROM patrons WHERE id IN (?, ?) ORDER BY id", ids)] == \
        [f"Room {i}" for i in ids]


def test_choices_offer_media_subjects_statuses_and_order_fields(store):
    conn = store.connect()
    c = batch.choices(conn)
    assert ("DB", "Digital talking book cartridge") in c.media and ("MYS", "Mystery") in c.subjects
    assert c.statuses_of_service[:4] == ["Active", "Suspended", "Inactive", "On hold"]
    assert "On request" in c.frequencies and ("id", "Patron record order") in c.order_fields


def test_a_batch_update_handed_to_the_scheduler_runs_from_its_params(store):
    from patron_tui.services import background

    conn = store.connect()
    update = batch.BatchUpdate(medium="DB", max_items_out=4, spacing=batch.Spacing(
        start=date(2026, 2, 2), every_days=1, group_size=5, order_by="id"))
    tgt = batch.target(conn, statement=GRADE5)
    run_id = background.queue_run(conn, "tester", batch.BATCH_KIND, "batch",
                                  {"target": tgt.model_dump(), "update": json.loads(update.model_dump_json())})
    engine = RunEngine(store, pool_size=1)
    try:
        [handle] = background.pick_up(engine, store)
        handle.wait(30)
    finally:
        engine.shutdown()
    assert handle.run_id == run_id and handle.status.value == "succeeded", handle.error
    got = profiles(conn)
    assert [got[b]["max_items_out"] for b in IN_GRADE5] == [4] * 6
    assert [got[b]["next_service_date"] for b in IN_GRADE5] == ["2026-02-02"] * 5 + ["2026-02-03"]
