"""The Job model: validation names the field; schedules parse; the suggested schedule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from patron_tui.services.jobs import (
    DaySchedule,
    Job,
    JobOptions,
    WeeklySchedule,
    describe_validation_error,
    parse_schedule,
    suggested_schedule,
)


def errors(**kw) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        Job(**kw)
    return describe_validation_error(exc.value)


BASE = {"name": "Students", "path": "/srv/sis/students.csv", "properties_path": "/srv/sis/students.properties"}


def test_a_directory_job_with_defaults():
    job = Job(**BASE)
    assert job.source == "directory" and job.encoding is None and job.sftp_port == 22
    assert job.schedule.is_empty() and job.options == JobOptions()


@pytest.mark.parametrize("kw, field", [
    ({"name": "  "}, "name:"),
    ({"name": "x" * 61}, "name:"),
    ({"path": ""}, "path:"),
    ({"path": "relative/students.csv"}, "path:"),
    ({"properties_path": ""}, "properties_path:"),
    ({"encoding": "klingon"}, "encoding:"),
    ({"source": "ftp"}, "source:"),
    ({"schedule": {"mon": {"mode": "full", "time": "25:00"}}}, "schedule.mon.time:"),
    ({"schedule": {"tue": {"mode": "sometimes"}}}, "schedule.tue.mode:"),
    ({"options": {"keep_runs": -1, "delete_previous_runs": True}}, "options.keep_runs:"),
    ({"options": {"keep_runs": 3}}, "options.keep_runs:"),
])
def test_validation_errors_name_the_field(kw, field):
    msgs = errors(**{**BASE, **kw})
    assert any(m.startswith(field) for m in msgs), msgs


@pytest.mark.parametrize("kw, field", [
    ({}, "sftp_url:"),
    ({"sftp_url": "sis.example.org/x"}, "sftp_user:"),
    ({"sftp_url": "sis.example.org/x", "sftp_user": "u"}, "file_name:"),
    ({"sftp_url": "sis.example.org/x", "sftp_user": "u", "file_name": "a/b.csv"}, "file_name:"),
    ({"sftp_url": "ftp://sis.example.org", "sftp_user": "u", "file_name": "a.csv"}, "sftp_url:"),
    ({"sftp_url": "sis.example.org", "sftp_user": "u", "file_name": "a.csv", "sftp_auth": "key"},
     "sftp_key_path:"),
    ({"sftp_url": "sis.example.org", "sftp_user": "u", "file_name": "a.csv", "sftp_port": 0}, "sftp_port:"),
])
def test_sftp_fields_are_required_and_named(kw, field):
    msgs = errors(name="N", source="sftp", properties_path="/p", **kw)
    assert any(m.startswith(field) for m in msgs), msgs


def test_sftp_url_keeps_case_and_splits_host_and_folder():
    job = Job(name="N", source="sftp", sftp_url="SIS.example.org/Exports/Nightly", sftp_user="Lib",
              file_name="Students.CSV", properties_path="/p")
    assert job.sftp_url == "sftp://SIS.example.org/Exports/Nightly"
    assert job.sftp_host == "SIS.example.org" and job.sftp_folder == "/Exports/Nightly"
    assert job.source_label() == "sftp://Lib@SIS.example.org:22/Exports/Nightly/Students.CSV"


def test_encoding_is_checked_and_blank_means_the_properties_files():
    assert Job(**BASE, encoding="Windows-1252").encoding == "Windows-1252"
    assert Job(**BASE, encoding=" ").encoding is None


def test_parse_schedule_days_ranges_and_errors():
    s = parse_schedule("mon-fri=incremental@2:30, sat=full@23:05")
    assert s.mon == DaySchedule(mode="incremental", time="02:30") and s.fri.mode == "incremental"
    assert s.sat == DaySchedule(mode="full", time="23:05") and s.sun.mode == "none"
    assert parse_schedule("sun=full", base=s).mon.mode == "incremental"
    for bad, word in (("mon=sometimes@02:00", "mode"), ("funday=full@02:00", "day"),
                      ("mon=full@24:00", "HH:MM"), ("mon", "DAY=MODE")):
        with pytest.raises(ValueError, match=word):
            parse_schedule(bad)


def test_suggested_schedule_follows_follett():
    small = suggested_schedule(50_000)
    assert all(d.mode == "full" for _, d in small.days())
    large = suggested_schedule(50_001)
    assert [d.mode for _, d in large.days()] == ["incremental"] * 5 + ["full"] * 2


def test_round_trip_through_json():
    job = Job(**BASE, schedule=suggested_schedule(60_000),
              options=JobOptions(delete_previous_runs=True, keep_runs=5, summary_errors_only=True))
    assert Job.model_validate_json(job.model_dump_json()) == job
    assert isinstance(job.schedule, WeeklySchedule)
