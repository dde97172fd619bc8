"""`patron-tui jobs ...`, `runs`, `scheduler` and `run-due`: the headless twins of the
console's Jobs section and Job Manager (scheduled patron updates).

Kept apart from cli.py, which registers these subcommands and dispatches to `main_jobs`.
Passwords are never taken from the command line: a prompt (getpass) or `--password-stdin`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from patron_tui.cli_common import Refused, add_db, fail, open_store
from patron_tui.services.jobs.model import DAYS

COMMANDS = ("jobs", "runs", "scheduler", "run-due")

_FIELD_FLAGS = {   # option dest -> Job field
    "source": "source", "path": "path", "sftp_url": "sftp_url", "port": "sftp_port", "user": "sftp_user",
    "auth": "sftp_auth", "key": "sftp_key_path", "file_name": "file_name", "properties": "properties_path",
    "encoding": "encoding",
}
_OPTION_FLAGS = {"allow_delete_outstanding": "allow_delete_outstanding", "errors_only": "summary_errors_only",
                 "delete_previous_runs": "delete_previous_runs"}


def _add_job_fields(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("job fields (as on the console's job form)")
    g.add_argument("--from", dest="from_file", metavar="FILE.toml|.json",
                   help="read the fields from a TOML or JSON file (options given here win)")
    g.add_argument("--source", choices=("directory", "sftp"))
    g.add_argument("--path", metavar="CSV", help="directory source: the CSV file's full path on this server")
    g.add_argument("--sftp-url", metavar="URL", help="SFTP source: sftp://HOST/FOLDER (case-sensitive)")
    g.add_argument("--port", type=int, metavar="N", help="SFTP port (default 22)")
    g.add_argument("--user", metavar="NAME", help="SFTP user name")
    g.add_argument("--auth", choices=("password", "key"), help="SFTP login: password (default) or key")
    g.add_argument("--key", metavar="FILE", help="SFTP key login: the private key file")
    g.add_argument("--file-name", metavar="NAME", help="SFTP source: the CSV file's name in the folder")
    g.add_argument("--properties", metavar="P", help="the import properties file")
    g.add_argument("--encoding", metavar="ENC", help="the CSV's encoding ('' = the properties file's)")
    g.add_argument("--schedule", metavar="SPEC",
                   help='"mon=full@02:00,tue-fri=incremental@02:00" (days not named keep their setting), '
                   '"none", or "suggested" (Follett\'s advice for the number of patrons)')
    for day in DAYS:
        g.add_argument(f"--{day}", metavar="MODE@HH:MM",
                       help="this day: none, full@HH:MM or incremental@HH:MM" if day == "mon" else "")
    g.add_argument("--allow-delete-outstanding", action=argparse.BooleanOptionalAction, default=None,
                   help="allow patrons with outstanding transactions to be deleted")
    g.add_argument("--errors-only", action=argparse.BooleanOptionalAction, default=None,
                   help="limit the job summary to errors and warnings")
    g.add_argument("--delete-previous-runs", action=argparse.BooleanOptionalAction, default=None,
                   help="delete previously run jobs (keep the newest --keep N)")
    g.add_argument("--keep", type=int, metavar="N", help="runs to keep (implies --delete-previous-runs)")
    r = p.add_argument_group("Inactivation / Deletion (after a Full update; 'off' turns a rule off)")
    r.add_argument("--records-read-greater-than", type=int, metavar="N",
                   help="run the rules only when the Full update read more than N records (0-999,999)")
    r.add_argument("--patron-types", metavar="A,B", help="limit the rules to these patron types ('' = all)")
    r.add_argument("--access-levels", metavar="A,B", help="... to these access levels ('' = all)")
    r.add_argument("--personas", metavar="A,B", help="... to these personas ('' = all)")
    r.add_argument("--inactivate-days", metavar="N|off",
                   help="inactivate patrons not updated in the past N days")
    r.add_argument("--set-homeroom-undefined", action=argparse.BooleanOptionalAction, default=None,
                   help="inactivating also clears the homeroom")
    r.add_argument("--preface-username", action=argparse.BooleanOptionalAction, default=None,
                   help='inactivating also prefaces the username with "Inactive-" and removes the password')
    r.add_argument("--delete-graduated-seniors", action=argparse.BooleanOptionalAction, default=None,
                   help="delete graduated seniors without transactions at the beginning of the new school year")
    r.add_argument("--delete-inactive", metavar="DAYS[:no-fines|:fines-below=AMOUNT|:regardless]|off",
                   help="delete patrons inactive for DAYS with no checkouts and no fines (default), no "
                   "checkouts and fines below AMOUNT, or regardless of checkouts and fines")
    r.add_argument("--delete-outstanding", metavar="inactive-days=N|grad-years=N|age=N|off",
                   help="delete patrons with outstanding transactions where ... (N 0-99; needs "
                   "--allow-delete-outstanding)")
    r.add_argument("--min-percent-of-previous", metavar="P|off",
                   help="also skip the rules when the Full file holds fewer than P%% of the records the "
                   "job's last Full update whose rules ran read (recommended: 90)")
    g.add_argument("--password-stdin", action="store_true",
                   help="SFTP: read the password (or key passphrase) from the first line of standard input")
    g.add_argument("--password", action="store_true",
                   help="SFTP: ask for the password (or key passphrase) at a prompt")


def register(sub) -> None:
    jobs = sub.add_parser("jobs", help="scheduled patron updates: list, show, add, edit, delete, run, test, preview",
                          description="Scheduled patron update jobs. Adding, editing, deleting and running "
                          "need the 'manage patrons for the district' permission (or security level 0).")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    p = jsub.add_parser("list", help="list the jobs with their next run")
    add_db(p)
    p.add_argument("--json", action="store_true")
    p = jsub.add_parser("show", help="show one job")
    add_db(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true")
    p = jsub.add_parser("add", help="add a job")
    add_db(p)
    p.add_argument("name", metavar="NAME", nargs="?", help="the job name (or 'name' in --from FILE)")
    _add_job_fields(p)
    p = jsub.add_parser("edit", help="change a job's fields (the others stay)")
    add_db(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--rename", metavar="NEW", help="give the job a new name")
    _add_job_fields(p)
    p = jsub.add_parser("delete", help="delete a job (its runs stay)")
    add_db(p)
    p.add_argument("name", metavar="NAME")
    p = jsub.add_parser("run", help="run a job now and wait for it")
    add_db(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--mode", choices=("full", "incremental"), default="full", help="default full")
    p.add_argument("--json", action="store_true", help="print the run's summary as one JSON object")
    p = jsub.add_parser("preview", help="how many patrons each inactivation/deletion rule would take today")
    add_db(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--date", metavar="YYYY-MM-DD", help="as of this day (default today)")
    p.add_argument("--json", action="store_true")
    p = jsub.add_parser("test", help="test a job's source and properties file (Test Server)")
    add_db(p)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="SFTP connect timeout")
    p.add_argument("--accept", metavar="SHA256:...",
                   help="accept the SFTP server's host key first, if it still has this fingerprint "
                   "(the one a previous `jobs test` showed; compare it with the server's administrator's)")
    p.add_argument("--json", action="store_true")

    runs = sub.add_parser("runs", help="list the runs of scheduled jobs (newest first)")
    add_db(runs)
    runs.add_argument("--job", metavar="NAME", help="only this job's runs")
    runs.add_argument("--limit", type=int, default=50, metavar="N", help="default 50")
    runs.add_argument("--json", action="store_true")

    for name, text in (("scheduler", "run due jobs until stopped (a systemd service)"),
                       ("run-due", "run the jobs that are due now, once (a crontab line)")):
        p = sub.add_parser(name, help=text)
        add_db(p)
        p.add_argument("--max-missed-age", type=float, metavar="MINUTES",
                       help="a slot missed while no scheduler ran still runs if younger than this "
                       "(default: setting jobs_max_missed_age_minutes, else 360)")
        if name == "scheduler":
            p.add_argument("--interval", type=float, default=30.0, metavar="S",
                           help="seconds between passes (default 30)")
        else:
            p.add_argument("--json", action="store_true")


# -- helpers -----------------------------------------------------------------------------


def _require(conn, store) -> None:
    from patron_tui.services.jobs.store import require_manager

    try:
        require_manager(conn, store.operator)
    except PermissionError as exc:
        raise Refused(str(exc)) from None


def _job_or_fail(conn, name: str):
    from patron_tui.services.jobs.store import get_job

    job = get_job(conn, name)
    if job is None:
        raise Refused(f"there is no job named {name!r} (see `patron-tui jobs list`)")
    return job


def main_jobs(db_path: Path, args: argparse.Namespace) -> int:
    try:
        if args.command == "runs":
            return _cmd_runs(db_path, args)
        if args.command == "scheduler":
            return _cmd_scheduler(db_path, args)
        if args.command == "run-due":
            return _cmd_run_due(db_path, args)
        return {"list": _cmd_list, "show": _cmd_show, "add": _cmd_add, "edit": _cmd_edit,
                "delete": _cmd_delete, "run": _cmd_run, "test": _cmd_test,
                "preview": _cmd_preview}[args.jobs_command](db_path, args)
    except Refused as exc:
        return fail(str(exc))


def _load_file(path_text: str) -> dict[str, Any]:
    path = Path(path_text).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Refused(f"{path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8-sig"))
        else:
            data = tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise Refused(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise Refused(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    except tomllib.TOMLDecodeError as exc:
        raise Refused(f"{path}: not valid TOML ({exc})") from None
    if not isinstance(data, dict):
        raise Refused(f"{path}: expected an object/table of job fields")
    for secret_key in ("password", "passphrase", "secret"):
        if secret_key in data:
            raise Refused(f"{path}: field {secret_key!r}: secrets are not read from files; "
                          "use --password-stdin or the prompt")
    return data


def _merge_fields(base: dict[str, Any], args: argparse.Namespace, where: str) -> dict[str, Any]:
    """The job's fields: `base`, then --from FILE, then the options given."""
    from patron_tui.services.jobs.model import WeeklySchedule, parse_day, parse_schedule, suggested_schedule

    fields = dict(base)
    if args.from_file:
        data = _load_file(args.from_file)
        where = f"{args.from_file}: "
        folder = Path(args.from_file).expanduser().resolve().parent
        for key in ("path", "properties_path", "sftp_key_path"):   # relative to the file's folder
            if isinstance(data.get(key), str) and data[key].strip() and not data[key].startswith(("/", "~")):
                data[key] = str(folder / data[key])
        sched = data.pop("schedule", None)
        options = data.pop("options", None)
        fields.update(data)
        if isinstance(sched, str):
            try:
                fields["schedule"] = parse_schedule(sched, WeeklySchedule.model_validate(fields.get("schedule", {})))
            except ValueError as exc:
                raise Refused(f"{where}{exc}") from None
        elif sched is not None:
            fields["schedule"] = {**_dump(fields.get("schedule")), **sched}
        if options is not None:
            fields["options"] = {**_dump(fields.get("options")), **options}
    for dest, name in _FIELD_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            if name in ("path", "properties_path", "sftp_key_path") and value.strip():
                value = str(Path(value).expanduser().absolute())   # the scheduler runs elsewhere
            fields[name] = value
    sched = WeeklySchedule.model_validate(_dump(fields.get("schedule")))
    try:
        if args.schedule is not None:
            spec = args.schedule.strip().lower()
            if spec == "suggested":
                sched = suggested_schedule(_patron_count(args))
            elif spec == "none":
                sched = WeeklySchedule()
            else:
                sched = parse_schedule(args.schedule, sched)
        for day in DAYS:
            value = getattr(args, day)
            if value is not None:
                sched = sched.model_copy(update={day: parse_day(value, field=f"--{day}")})
    except ValueError as exc:
        raise Refused(str(exc)) from None
    fields["schedule"] = sched.model_dump()
    opts = _dump(fields.get("options"))
    for dest, name in _OPTION_FLAGS.items():
        if getattr(args, dest) is not None:
            opts[name] = getattr(args, dest)
    if args.keep is not None:
        opts["keep_runs"], opts["delete_previous_runs"] = args.keep, True
    if opts.get("delete_previous_runs") is False:
        opts["keep_runs"] = None
    fields["options"] = opts
    fields["inactivation"] = _merge_rules(_dump(fields.get("inactivation")), args)
    return fields


def _off(text: str) -> bool:
    return text.strip().lower() in ("off", "none", "no", "")


def _merge_rules(rules: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The job's Inactivation / Deletion fields with the rule options given applied."""
    def number(text: str, flag: str) -> int:
        try:
            return int(text.replace(",", "").replace("_", ""))
        except ValueError:
            raise Refused(f"{flag}: {text!r} is not a whole number") from None

    if args.records_read_greater_than is not None:
        rules["records_read_greater_than"] = args.records_read_greater_than
    for dest in ("patron_types", "access_levels", "personas"):
        value = getattr(args, dest)
        if value is not None:
            rules[dest] = [x.strip() for x in value.split(",") if x.strip()]
    for dest in ("set_homeroom_undefined", "preface_username", "delete_graduated_seniors"):
        if getattr(args, dest) is not None:
            rules[dest] = getattr(args, dest)
    if args.inactivate_days is not None:
        rules["inactivate_days"] = None if _off(args.inactivate_days) else number(args.inactivate_days,
                                                                                   "--inactivate-days")
    if args.min_percent_of_previous is not None:
        text = args.min_percent_of_previous.rstrip("%")
        rules["min_percent_of_previous"] = None if _off(text) else number(text, "--min-percent-of-previous")
    if args.delete_inactive is not None:
        spec = args.delete_inactive
        if _off(spec):
            rules["delete_inactive"] = None
        else:
            days, _, how = spec.partition(":")
            rule: dict[str, Any] = {"days": number(days, "--delete-inactive")}
            how = how.strip().lower()
            if how in ("", "no-fines", "no_checkouts_no_fines"):
                rule["condition"] = "no_checkouts_no_fines"
            elif how == "regardless":
                rule["condition"] = "regardless"
            elif how.startswith("fines-below="):
                amount = how.split("=", 1)[1].lstrip("$")
                try:
                    cents = round(float(amount) * 100)
                except ValueError:
                    raise Refused(f"--delete-inactive: {amount!r} is not an amount (e.g. 5.00)") from None
                rule.update(condition="fines_below", fine_below_cents=cents)
            else:
                raise Refused(f"--delete-inactive: {how!r}: write DAYS, DAYS:no-fines, "
                              "DAYS:fines-below=AMOUNT or DAYS:regardless")
            rules["delete_inactive"] = rule
    if args.delete_outstanding is not None:
        spec = args.delete_outstanding.strip().lower()
        if _off(spec):
            rules["delete_outstanding"] = None
        else:
            by, _, value = spec.partition("=")
            by = by.replace("-", "_")
            if by not in ("inactive_days", "grad_years", "age") or not value:
                raise Refused(f"--delete-outstanding: {spec!r}: write inactive-days=N, grad-years=N or age=N")
            rules["delete_outstanding"] = {"by": by, "value": number(value, "--delete-outstanding")}
    return rules


def _dump(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return value.model_dump() if hasattr(value, "model_dump") else dict(value)


_PATRONS_FOR_SUGGESTION: list[int] = []


def _patron_count(args: argparse.Namespace) -> int:
    return _PATRONS_FOR_SUGGESTION[0] if _PATRONS_FOR_SUGGESTION else 0


def _validate(fields: dict[str, Any], where: str):
    from pydantic import ValidationError

    from patron_tui.services.jobs.model import Job, describe_validation_error

    try:
        return Job.model_validate(fields)
    except ValidationError as exc:
        raise Refused("\n".join(f"{where}{m}" for m in describe_validation_error(exc))) from None


def _read_secret(args: argparse.Namespace, job, *, required: bool) -> str | None:
    """The password/passphrase from stdin or a prompt; None when not asked for."""
    if job.source != "sftp":
        if args.password_stdin or args.password:
            raise Refused("--password/--password-stdin: only SFTP jobs have a password")
        return None
    what = "password" if job.sftp_auth == "password" else "key passphrase (empty for none)"
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if args.password or (required and job.sftp_auth == "password"):
        if not sys.stdin.isatty():
            raise Refused(f"job {job.name!r} needs the SFTP {what}: give it with --password-stdin "
                          "(it is never taken from the command line)")
        return getpass.getpass(f"SFTP {what} for {job.sftp_user}@{job.sftp_host}: ")
    return None


def _save(store, conn, job, secret: str | None, old_name: str | None = None):
    from patron_tui.services.jobs.store import JobExists, save_job

    try:
        with store.writer(conn, None) as w:
            saved = save_job(w, job)
    except (JobExists, LookupError) as exc:
        raise Refused(str(exc)) from None
    if saved.source == "sftp" and (secret is not None or (old_name and old_name != saved.name)):
        from patron_tui.services.jobs.secrets import SecretStoreError, default_secret_store

        secrets = default_secret_store(store.path)
        try:
            if old_name and old_name != saved.name and secrets.has(old_name):
                secrets.rename(old_name, saved.name)
            if secret is not None:
                secrets.set(saved.name, secret or None)
        except SecretStoreError as exc:
            raise Refused(f"the job was saved, but its secret was not: {exc}") from None
    return saved


# -- commands ----------------------------------------------------------------------------

def _job_dict(job, nxt=None) -> dict[str, Any]:
    out = job.model_dump()
    out["source_label"] = job.source_label()
    out["schedule_text"] = job.schedule.label()
    if nxt is not None:
        out["next_run"], out["next_mode"] = nxt[0].isoformat(), nxt[1]
    return out


def _cmd_list(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.jobs.schedule import next_run
    from patron_tui.services.jobs.store import list_jobs
    from patron_tui.textsafe import visible

    _, conn = open_store(db_path)
    now = datetime.now(timezone.utc)
    rows = [(job, next_run(job, now)) for job in list_jobs(conn)]
    if args.json:
        print(json.dumps([_job_dict(j, n) for j, n in rows], indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no jobs yet; add one with `patron-tui jobs add NAME --path CSV --properties P --schedule ...`")
        return 0
    print(f"{'NAME':24} {'SOURCE':9} {'NEXT RUN':28} SCHEDULE")
    for job, nxt in rows:
        when = f"{nxt[0]:%a %Y-%m-%d %H:%M %Z} {nxt[1]}" if nxt else "not scheduled"
        print(f"{visible(job.name)[:24]:24} {job.source:9} {when:28} {job.schedule.label()}")
    return 0


def _cmd_show(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.jobs.schedule import next_run
    from patron_tui.textsafe import visible

    store, conn = open_store(db_path)
    job = _job_or_fail(conn, args.name)
    nxt = next_run(job, datetime.now(timezone.utc))
    has_secret = None
    if job.source == "sftp":
        from patron_tui.services.jobs.secrets import SecretStoreError, default_secret_store

        try:
            has_secret = default_secret_store(store.path).has(job.name)
        except SecretStoreError as exc:
            has_secret = f"unreadable: {exc}"
    if args.json:
        print(json.dumps({**_job_dict(job, nxt), "secret_stored": has_secret}, indent=2, ensure_ascii=False))
        return 0
    print(f"job        {visible(job.name)}")
    print(f"source     {job.source}: {visible(job.source_label())}")
    if job.source == "sftp":
        print(f"login      {job.sftp_auth}" + (f" (key {visible(job.sftp_key_path)})" if job.sftp_auth == "key" else "")
              + f"; secret {'stored' if has_secret is True else 'not stored' if has_secret is False else has_secret}")
    print(f"properties {visible(job.properties_path)}")
    print(f"encoding   {visible(job.encoding) if job.encoding else 'from the properties file'}")
    for day, d in job.schedule.days():
        print(f"  {day}  {d.label()}")
    o = job.options
    print(f"options    allow delete with outstanding transactions: {'yes' if o.allow_delete_outstanding else 'no'}; "
          f"summary errors and warnings only: {'yes' if o.summary_errors_only else 'no'}; "
          f"delete previous runs: {('keep ' + str(o.keep_runs or 0)) if o.delete_previous_runs else 'no'}")
    print(f"next run   {nxt[0]:%a %Y-%m-%d %H:%M %Z} ({nxt[1]})" if nxt else "next run   not scheduled")
    for line in _rules_lines(job):
        print(line)
    return 0


def _rules_lines(job) -> list[str]:
    from patron_tui.textsafe import visible

    r = job.inactivation
    if not r.any_rule:
        return ["inactivation/deletion  none"]
    out = [f"inactivation/deletion  after a Full update that read more than {r.records_read_greater_than:,} records"]
    scope = [f"{label} {', '.join(map(visible, values))}" for label, values in
             (("patron types", r.patron_types), ("access levels", r.access_levels), ("personas", r.personas))
             if values]
    out.append(f"  limited to     {'; '.join(scope) if scope else 'every patron (protected ones never)'}")
    if r.min_percent_of_previous:
        out.append(f"  also needs     {r.min_percent_of_previous}% of the records of the last Full update "
                   "whose rules ran")
    if r.inactivate_days is not None:
        extra = [x for x, on in (("homeroom cleared", r.set_homeroom_undefined),
                                 ('username prefaced "Inactive-", password removed', r.preface_username)) if on]
        out.append(f"  inactivate     not updated in the past {r.inactivate_days} days"
                   + (f" ({'; '.join(extra)})" if extra else ""))
    if r.delete_graduated_seniors:
        out.append("  delete         graduated seniors without transactions at the start of the school year")
    if r.delete_inactive is not None:
        d = r.delete_inactive
        how = {"no_checkouts_no_fines": "with no checkouts and no fines",
               "fines_below": f"with no checkouts and fines below {(d.fine_below_cents or 0) / 100:.2f}",
               "regardless": "regardless of checkouts and fines"}[d.condition]
        out.append(f"  delete         inactive for {d.days} days {how}")
    if r.delete_outstanding is not None:
        o = r.delete_outstanding
        how = {"inactive_days": f"inactive for {o.value} days", "grad_years": f"graduated {o.value} years ago",
               "age": f"aged {o.value}"}[o.by]
        out.append(f"  delete         with outstanding transactions where {how}"
                   + ("" if job.options.allow_delete_outstanding else " (not allowed by the job's options: kept)"))
    return out


def _cmd_preview(db_path: Path, args: argparse.Namespace) -> int:
    """How many patrons each of the job's rules would take today."""
    from patron_tui.services.inactivation import preview, rule_title

    _, conn = open_store(db_path)
    job = _job_or_fail(conn, args.name)
    try:
        today = datetime.strptime(args.date, "%Y-%m-%d").date() if args.date else datetime.now().date()
    except ValueError:
        raise Refused(f"--date: {args.date!r} is not YYYY-MM-DD") from None
    counts = preview(conn, job.inactivation, today, allow_outstanding=job.options.allow_delete_outstanding)
    if args.json:
        print(json.dumps({"job": job.name, "date": today.isoformat(), "rules": counts}, indent=2))
        return 0
    if not counts:
        print(f"job {job.name!r} has no inactivation or deletion rule")
        return 0
    print(f"job {job.name!r}, as of {today.isoformat()} (before tonight's file):")
    for rule, c in counts.items():
        parts = [f"{v:,} {k.replace('_', ' ')}" for k, v in c.items() if v] or ["nobody"]
        print(f"  {rule_title(job.inactivation, rule):58} {', '.join(parts)}")
    return 0


def _cmd_add(db_path: Path, args: argparse.Namespace) -> int:
    store, conn = open_store(db_path)
    _require(conn, store)
    _PATRONS_FOR_SUGGESTION[:] = [conn.execute("SELECT count(*) FROM patrons WHERE is_system = 0").fetchone()[0]]
    fields = _merge_fields({}, args, "")
    if args.name:
        fields["name"] = args.name
    if not fields.get("name"):
        raise Refused("name: give the job's name (NAME or 'name' in --from FILE)")
    job = _validate(fields, f"{args.from_file}: " if args.from_file else "")
    secret = _read_secret(args, job, required=True)
    saved = _save(store, conn, job, secret)
    print(f"job {saved.name!r} added ({saved.source}, {saved.schedule.label()})")
    return 0


def _cmd_edit(db_path: Path, args: argparse.Namespace) -> int:
    store, conn = open_store(db_path)
    _require(conn, store)
    _PATRONS_FOR_SUGGESTION[:] = [conn.execute("SELECT count(*) FROM patrons WHERE is_system = 0").fetchone()[0]]
    old = _job_or_fail(conn, args.name)
    fields = _merge_fields(old.model_dump(), args, "")
    fields["id"] = old.id
    if args.rename:
        fields["name"] = args.rename
    job = _validate(fields, f"{args.from_file}: " if args.from_file else "")
    # a new login way needs its own secret: a password is not a key passphrase
    new_login = job.source == "sftp" and (old.source != "sftp" or old.sftp_auth != job.sftp_auth)
    secret = _read_secret(args, job, required=new_login)
    if new_login and secret is None:
        secret = ""   # key login without a passphrase given: the old password is forgotten
    saved = _save(store, conn, job, secret, old_name=old.name)
    if old.source == "sftp" and saved.source != "sftp":
        _forget_secret(store, old.name)
    print(f"job {saved.name!r} saved ({saved.source}, {saved.schedule.label()})")
    return 0


def _forget_secret(store, name: str) -> None:
    from patron_tui.services.jobs.secrets import SecretStoreError, default_secret_store

    try:
        default_secret_store(store.path).delete(name)
    except SecretStoreError as exc:
        raise Refused(f"job {name!r} saved, but its old secret could not be removed: {exc}") from None


def _cmd_delete(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.jobs.store import delete_job

    store, conn = open_store(db_path)
    _require(conn, store)
    job = _job_or_fail(conn, args.name)
    with store.writer(conn, None) as w:
        delete_job(w, job.name)
    if job.source == "sftp":
        from patron_tui.services.jobs.secrets import SecretStoreError, default_secret_store

        try:
            default_secret_store(store.path).delete(job.name)
        except SecretStoreError as exc:
            return fail(f"job {job.name!r} deleted, but its secret could not be removed: {exc}")
    print(f"job {job.name!r} deleted (its runs stay in `patron-tui runs`)")
    return 0


_SUMMARY_FIELDS = ("read", "added", "updated", "unchanged", "skipped", "errors", "warnings", "conflicts")


def _cmd_run(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.cli import _print_messages
    from patron_tui.runs import RunEngine
    from patron_tui.services.jobs.runner import job_params, job_title, run_job
    from patron_tui.services.jobs.store import JOB_KIND

    store, conn = open_store(db_path)
    _require(conn, store)
    job = _job_or_fail(conn, args.name)
    conn.close()
    engine = RunEngine(store, pool_size=getattr(args, "workers", None))
    if not args.json:
        _print_messages(engine)
    try:
        handle = engine.execute(JOB_KIND, job_title(job, args.mode),
                                lambda ctx: run_job(ctx, job.name, args.mode),
                                params=job_params(job, args.mode), job_id=job.id, mode=args.mode,
                                started_by="operator")
    finally:
        engine.shutdown()
    s = handle.summary
    if args.json:
        out = {"run_id": handle.run_id, "job": job.name, "status": handle.status.value, "mode": args.mode,
               "error": handle.error}
        out.update({k: s.get(k, 0) for k in _SUMMARY_FIELDS})
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        counts = ", ".join(f"{s.get(k, 0)} {k}" for k in _SUMMARY_FIELDS)
        print(f"run {handle.run_id}: {handle.status.value}: {counts}")
        if handle.status.value != "succeeded":
            fail(handle.error or handle.status.value)
    return 0 if handle.status.value == "succeeded" else 2


def _cmd_test(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.jobs.sources import test_job
    from patron_tui.textsafe import visible

    store, conn = open_store(db_path)
    job = _job_or_fail(conn, args.name)
    kw = {"timeout": args.timeout} if args.timeout and job.source == "sftp" else {}
    if args.accept:
        if job.source != "sftp":
            raise Refused("--accept: only SFTP jobs have a host key")
        _require(conn, store)
        from patron_tui.services.jobs.sftp import SftpError, accept_host_key

        try:
            accepted = accept_host_key(job, args.accept, db_path=store.path, **kw)
        except SftpError as exc:
            raise Refused(str(exc)) from None
        print(f"host key {accepted} of {job.sftp_host}:{job.sftp_port} accepted")
    report = test_job(job, store.path, properties=True, **kw)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        for c in report.checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.step:11} {visible(c.sentence)}")
            if c.detail and not c.ok:
                for line in c.detail.splitlines():
                    print(f"{'':17}{visible(line)}")
        if report.fingerprint:
            print(f"host key   {report.fingerprint}")
    return 0 if report.ok else 1


def _cmd_runs(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.jobs.store import job_runs
    from patron_tui.textsafe import visible

    _, conn = open_store(db_path)
    if args.job is not None:
        _job_or_fail(conn, args.job)
    rows = job_runs(conn, args.job, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no job runs yet")
        return 0
    print(f"{'RUN':>5} {'JOB':20} {'MODE':11} {'STATUS':11} {'BY':9} {'STARTED':20} {'SECS':>7} "
          f"{'READ':>7} {'ADDED':>6} {'UPD':>6} {'SKIP':>5} {'ERR':>5}")
    for r in rows:
        started = (r["started_at"] or r["created_at"] or "")[:19].replace("T", " ")
        secs = f"{r['duration_s']:.1f}" if r["duration_s"] is not None else ""
        print(f"{r['id']:>5} {visible(r['job_name'])[:20]:20} {r['mode'] or '':11} {r['status']:11} "
              f"{r['started_by']:9} {started:20} {secs:>7} {r['read']:>7} {r['added']:>6} {r['updated']:>6} "
              f"{r['skipped']:>5} {r['errors']:>5}")
        if r["status"] in ("failed", "missed", "interrupted") and r["error"]:
            print(f"{'':6}{visible(r['error'])}")
    return 0


def _max_age(args: argparse.Namespace) -> timedelta | None:
    if args.max_missed_age is None:
        return None
    if args.max_missed_age < 0:
        raise Refused("--max-missed-age: must be 0 or more minutes")
    return timedelta(minutes=args.max_missed_age)


def _print_pass(results: list[dict[str, Any]]) -> None:
    from patron_tui.textsafe import visible

    for r in results:
        extra = f": {visible(r['error'])}" if r.get("error") else ""
        print(f"{datetime.now().astimezone():%Y-%m-%d %H:%M:%S} job {visible(r['job'])}: {r['mode']} slot "
              f"{r['slot']} {r['action']} -> run {r['run_id']} {r['status']}{extra}", flush=True)


def _cmd_run_due(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.jobs.scheduler import run_due

    store, conn = open_store(db_path)
    conn.close()
    results = run_due(store, max_missed_age=_max_age(args))
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        _print_pass(results)
    return 0 if all(r["status"] in ("succeeded", "missed") for r in results) else 1


def _cmd_scheduler(db_path: Path, args: argparse.Namespace) -> int:
    from patron_tui.services.jobs.scheduler import Scheduler, upcoming

    store, conn = open_store(db_path)
    conn.close()
    if args.interval <= 0:
        raise Refused("--interval: must be more than 0 seconds")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sched = Scheduler(store, interval=args.interval, max_missed_age=_max_age(args), on_pass=_print_pass)

    def stop(signum, _frame) -> None:
        print(f"scheduler: signal {signum}, stopping after the runs in progress", file=sys.stderr, flush=True)
        sched.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"scheduler: {store.path}, a pass every {args.interval:g} s", flush=True)
    for name, when, mode in upcoming(store)[:10]:
        print(f"scheduler: next {name}: {mode} at {when:%a %Y-%m-%d %H:%M %Z}", flush=True)
    sched.run()
    return 0
