"""Renew Patron Accounts and Reset Patron Accounts.

Renew: only while account expiration is on (setting `account_expiration`); each selected
patron's account now expires today + their policy's account days. A patron whose policy is not
in the policy table is skipped.

Reset: the password by No change / Last name (non-secure) / Patron (email link), and the
username by No change / Barcode / First initial + last name / First name + last name / Email
address, optionally with the nickname in place of the first name. The operator needs the
batch-tools and the "may reset patron passwords" permissions, and resets only patrons whose
security group has a higher level number than their own (level 0: everyone; a patron whose
group is not in the security-group table is skipped for everyone else).

Usernames made from names are lower-case ASCII: letters are folded (NFKD, accents dropped;
ß -> ss, æ -> ae, ø -> o, ...) and everything but letters and digits is removed ("Ó'Brien-Ruíz"
-> "obrienruiz"). A username from the barcode is the barcode as it is; from the email address it
is the first address listed (email, then email2), lower-cased. A patron is skipped when the new
username would be blank, when they have no email address for it, when another patron holds it
now (compared without regard to case; a holder that is itself reset in this run still counts,
so a run never needs two patrons to trade names), or when a patron earlier in the run (by
patron id) gets it.

Passwords are stored hashed (scrypt, a random salt per password): `scrypt$N$r$p$salt$hash`
(hex salt and hash).
Last name: the password is the last name; a last name with anything but the letters A-Z
(accents, apostrophes, hyphens, spaces) becomes its plain letters (as usernames fold them,
case kept) and the stored hash ends in `$must-change`: the patron must choose a new password
at the next login (the schema has no other place for that flag); the report counts them. A last
name with no letter left skips the patron. Email link: each patron gets a message with a link
holding a random token (to the first email address; no address: skipped); the stored value
becomes `reset-link$sha256$<hash of the token>$<expiry date>`, so the old password stops working
and the link, for LINK_DAYS days, lets the patron choose a new one. The mail goes through the
SMTP server of services/mail.py, or into the outbox folder beside the database when none is
configured (the report says so). No password, token or link is ever written to a message, the
report, an exception or the journal (which holds hashes only).

The links are sent after the run's write transaction has committed (`after_commit`), so a long
SMTP conversation never holds the database's write lock. A patron whose message is not delivered
(the server refuses the address or the message, the connection drops, the operator cancels
while sending) gets the password and username it had back in a second short transaction of the
same run (undoing the run covers both) and an error line "the reset link could not be sent to
...; the password is unchanged"; the summary counts them as errors, not changed. A server that
cannot be reached puts everyone back and fails the run, saying why once. A patron changed by
someone else between the two transactions is left as it is (its error line says to undo the run).
If the program stops between the commit and the end of the sending, the unsent patrons keep a
reset link they never got: undoing the run puts them back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, Field, model_validator

from patron_tui.runs import RunFailed
from patron_tui.services import mail
from patron_tui.services.jobs.secrets import Secret
from patron_tui.services.permissions import operator_level, outranks, require
from patron_tui.services.utilities.base import (
    SYSTEM_REASON, Plan, Skip, Utility, UtilityError, change, patron_name, patron_rows, register, skip,
)
from patron_tui.store import ChangesetWriter
from patron_tui.store.db import DatabaseBusy

LINK_DAYS = 7
MUST_CHANGE = "must-change"
# N = 2**12 (4 MiB, ~10-30 ms a hash): a reset of thousands of patrons is one transaction that
# holds the write lock, and a last-name password is guessable whatever the cost; the parameters
# are stored with each hash, so a login that sets a chosen password can use stronger ones
_SCRYPT = (2 ** 12, 8, 1)
_FOLD = str.maketrans({"ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE",
                       "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
                       "ı": "i", "ŋ": "ng", "Ŋ": "Ng"})


# -- passwords -----------------------------------------------------------------------------------

def hash_password(password: str, *, must_change: bool = False) -> str:
    n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    stored = f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"
    return stored + f"${MUST_CHANGE}" if must_change else stored


def verify_password(stored: str | None, password: str) -> bool:
    parts = (stored or "").split("$")
    if len(parts) < 6 or parts[0] != "scrypt":
        return False
    n, r, p = (int(x) for x in parts[1:4])
    digest = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(parts[4]), n=n, r=r, p=p, dklen=32)
    return hmac.compare_digest(digest.hex(), parts[5])


def must_change(stored: str | None) -> bool:
    """Whether the patron must choose a new password at the next login."""
    return bool(stored) and (stored.endswith(f"${MUST_CHANGE}") or stored.startswith("reset-link$"))


def reset_record(token: str, expires: date) -> str:
    return f"reset-link$sha256${hashlib.sha256(token.encode()).hexdigest()}${expires.isoformat()}"


def verify_reset_token(stored: str | None, token: str, today: date) -> bool:
    parts = (stored or "").split("$")
    if len(parts) != 4 or parts[0] != "reset-link":
        return False
    return (hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), parts[2])
            and today <= date.fromisoformat(parts[3]))


def fold(text: str, *, digits: bool = True) -> str:
    """ASCII letters (and digits) of `text`: accents dropped, everything else removed."""
    decomposed = unicodedata.normalize("NFKD", (text or "").translate(_FOLD))
    return "".join(c for c in decomposed if c.isascii() and (c.isalpha() or (digits and c.isdigit())))


def last_name_password(last_name: str) -> tuple[str, bool]:
    """(the password, whether the patron must change it): the last name, or its plain letters."""
    plain = (last_name or "").strip()
    if plain and plain.isascii() and plain.isalpha():
        return plain, False
    return fold(plain, digits=False), True


# -- Renew Patron Accounts ------------------------------------------------------------------------

class NoOptions(BaseModel):
    """This utility has no options."""


def _setting(conn, key: str, default: str = "") -> str:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return row[0] if row else default


@register
class RenewPatronAccounts(Utility):
    name = "renew-patron-accounts"
    title = "Renew Patron Accounts"
    description = "Renews the accounts of the selected patrons for the days their policy gives"
    Options = NoOptions

    def available(self, conn) -> str | None:
        if _setting(conn, "account_expiration", "on").strip().lower() not in ("on", "1", "true", "yes"):
            return ("Renew Patron Accounts works only while account expiration is on; account "
                    "expiration dates are disabled in this district's patron rules.")
        return None

    def plan(self, conn, ids, options, operator) -> Plan:
        days = {r[0]: r[1] for r in conn.execute("SELECT code, account_days FROM policies")}
        today = date.today()
        changes, skipped, same = [], [], 0
        for r in patron_rows(conn, ids, ["policy", "account_expires"]):
            if r["is_system"]:
                skipped.append(skip(r, SYSTEM_REASON))
                continue
            n = days.get(r["policy"])
            if n is None:
                why = (f"policy {r['policy']!r} is not in the policy table" if r["policy"]
                       else "has no policy") + ": the account days are unknown"
                skipped.append(skip(r, why))
                continue
            new = (today + timedelta(days=n)).isoformat()
            old = r["account_expires"] or ""
            if old[:10] == new:
                same += 1
                continue
            changes.append(change(r, old[:10] or "(none)", new))
        notes = [f"{same} selected patrons already expire on their renewal date."] if same else []
        return Plan(selected=len(ids), changes=changes, skipped=skipped, notes=notes, column="Account expires")

    def apply(self, writer: ChangesetWriter, plan: Plan, options, ctx) -> None:
        writer.update_many("patrons", [(c.patron_id, {"account_expires": c.after, "updated_at": writer.ts})
                                       for c in plan.changes])


# -- Reset Patron Accounts ------------------------------------------------------------------------

PASSWORD_WAYS = {"no_change": "No change", "last_name": "Last name (non-secure)",
                 "email_link": "Patron (email link)"}
USERNAME_WAYS = {"no_change": "No change", "barcode": "Barcode", "first_initial_last_name": "First initial + last name",
                 "first_last_name": "First name + last name", "email": "Email address"}


class ResetOptions(BaseModel):
    password_by: Literal["no_change", "last_name", "email_link"] = Field(
        default="no_change", title="Reset password by",
        description="No change; Last name (non-secure); Patron (email link: the patron chooses a new password).")
    username_by: Literal["no_change", "barcode", "first_initial_last_name", "first_last_name", "email"] = Field(
        default="no_change", title="Reset username by",
        description="No change; Barcode; First initial + last name; First name + last name; Email address.")
    use_nickname: bool = Field(default=False, title="Use nickname when available",
                               description="The nickname in place of the first name, when the patron has one.")

    @model_validator(mode="after")
    def _something(self) -> "ResetOptions":
        if self.password_by == "no_change" and self.username_by == "no_change":
            raise ValueError("choose how to reset the password, the username or both (both are No change)")
        return self


def first_email(row) -> str:
    """The first address listed: in `email` (a field may list several, split by ; , or
    spaces), else in `email2`; "" when there is none."""
    for col in ("email", "email2"):
        for value in re.split(r"[;,\s]+", row[col] or ""):
            if "@" in value:
                return value
    return ""


def new_username(row, options: ResetOptions) -> tuple[str | None, str | None]:
    """(the new username, or None with the reason it cannot be made)."""
    way = options.username_by
    if way == "barcode":
        value = (row["barcode"] or "").strip()
        return (value, None) if value else (None, "has no barcode to make a username from")
    if way == "email":
        value = first_email(row).lower()
        return (value, None) if value else (None, "has no email address to make a username from")
    first = row["first_name"]
    if options.use_nickname and (row["nickname"] or "").strip():
        first = row["nickname"]
    first, last = fold(first).lower(), fold(row["last_name"]).lower()
    if not last:
        return None, "has no last name letters to make a username from"
    if way == "first_initial_last_name":
        return first[:1] + last, None
    return first + last, None


def _who(row) -> str:
    return patron_name(row) + (f" ({row['barcode']})" if row["barcode"] else f" (#{row['id']})")


@register
class ResetPatronAccounts(Utility):
    name = "reset-patron-accounts"
    title = "Reset Patron Accounts"
    description = "Resets the selected patrons' usernames and/or passwords to the chosen formats"
    Options = ResetOptions
    checks_levels = True   # its own, stricter level rule (a patron with no group: level 0 only)
    stopped_after_commit = ("the new usernames/passwords were committed, then the process stopped while the reset "
                            "links were being sent: some patrons may have no link and cannot log in")

    def check(self, conn, operator: str, options: ResetOptions) -> None:
        require(conn, operator, "reset_passwords")   # batch tools and "may reset patron passwords"
        if options.password_by == "email_link" and not mail.load_settings(conn).reset_url:
            raise UtilityError("Reset password by: Patron (email link) needs the address of the password reset "
                               "page; set it with `patron-tui mail-settings --reset-url URL`.")

    def plan(self, conn, ids, options: ResetOptions, operator) -> Plan:
        level_of = {r[0]: r[1] for r in conn.execute("SELECT code, security_level FROM security_groups")}
        op_level = operator_level(conn, operator)
        op_level = 0 if op_level is None else op_level   # check() has refused a non-operator already
        rows = patron_rows(conn, ids, ["nickname", "email", "email2", "security_group", "username",
                                       "password_hash IS NOT NULL AS has_password"])
        wanted: dict[int, str] = {}
        skipped: list[Skip] = []
        eligible = []
        for r in rows:
            if r["is_system"]:
                skipped.append(skip(r, SYSTEM_REASON))
                continue
            group = r["security_group"]
            level = level_of.get(group)
            if not outranks(op_level, level):
                if level is None:
                    why = (f"security group {group!r} is not in the security-group table" if group
                           else "has no security group") + ": only a level 0 operator may reset it"
                else:
                    why = (f"security group {group} is level {level}; your level {op_level} may reset only "
                           f"higher level numbers")
                skipped.append(skip(r, why))
                continue
            if options.username_by != "no_change":
                value, why = new_username(r, options)
                if why:
                    skipped.append(skip(r, why))
                    continue
                wanted[r["id"]] = value
            if options.password_by == "email_link" and not first_email(r):
                skipped.append(skip(r, "has no email address for the password reset link"))
                wanted.pop(r["id"], None)
                continue
            if options.password_by == "last_name" and not last_name_password(r["last_name"])[0]:
                skipped.append(skip(r, "has no last name letters to make a password from"))
                wanted.pop(r["id"], None)
                continue
            eligible.append(r)
        holders = {}
        if wanted:
            for h in conn.execute(
                    "SELECT id, barcode, last_name, first_name, lower(username) AS u FROM patrons"
                    " WHERE username IS NOT NULL AND lower(username) IN (SELECT value FROM json_each(?))",
                    (json.dumps(sorted({v.lower() for v in wanted.values()})),)):
                holders.setdefault(h["u"], []).append(h)
        given: dict[str, object] = {}
        changes = []
        must, same = 0, 0
        for r in eligible:
            before, after = [], []
            if options.username_by != "no_change":
                value = wanted[r["id"]]
                key = value.lower()
                other = next((h for h in holders.get(key, []) if h["id"] != r["id"]), None)
                if other is not None:
                    skipped.append(skip(r, f"the username {value!r} belongs to {_who(other)}"))
                    continue
                if key in given:
                    skipped.append(skip(r, f"the username {value!r} would also go to {_who(given[key])}, "
                                           "earlier in this run"))
                    continue
                given[key] = r
                if (r["username"] or "") != value:
                    before.append(f"username {r['username'] or '(none)'}")
                    after.append(f"username {value}")
            if options.password_by == "last_name":
                _pw, flag = last_name_password(r["last_name"])
                before.append(f"password {'set' if r['has_password'] else 'none'}")
                after.append("password: last name" + (", to be changed at next login" if flag else ""))
                must += flag
            elif options.password_by == "email_link":
                before.append(f"password {'set' if r['has_password'] else 'none'}")
                after.append(f"reset link emailed to {first_email(r)}")
            if not after:
                same += 1
                continue
            changes.append(change(r, "; ".join(before), "; ".join(after)))
        notes = [f"Password: {PASSWORD_WAYS[options.password_by]}; username: {USERNAME_WAYS[options.username_by]}"
                 + (" (nickname when available)" if options.use_nickname and options.username_by.startswith("first")
                    else "") + "."]
        if must:
            notes.append(f"{must} patrons have accents or other special characters in their last name: their "
                         "password is its plain letters, and they must create a new password at their next login.")
        if same:
            notes.append(f"{same} selected patrons already have that username.")
        if options.password_by == "email_link":
            settings = mail.load_settings(conn)
            notes.append(f"Reset links (valid {LINK_DAYS} days) go out through {settings.describe()}.")
        return Plan(selected=len(ids), changes=changes, skipped=skipped, notes=notes, column="Account",
                    data={"usernames": {str(k): v for k, v in wanted.items()}})

    def apply(self, writer: ChangesetWriter, plan: Plan, options: ResetOptions, ctx) -> "_Pending | None":
        conn = writer.conn
        ids = [c.patron_id for c in plan.changes]
        if not ids:
            return None
        rows = {r["id"]: r for r in patron_rows(conn, ids, ["email", "email2", "username", "password_hash",
                                                            "updated_at"])}
        updates: dict[int, dict] = {pid: {} for pid in ids}
        if options.username_by != "no_change":
            for pid in ids:
                value = plan.data["usernames"][str(pid)]
                if (rows[pid]["username"] or "") != value:
                    updates[pid]["username"] = value
        pending = None
        if options.password_by == "last_name":
            for i, pid in enumerate(ids, 1):
                pw, flag = last_name_password(rows[pid]["last_name"])
                updates[pid]["password_hash"] = hash_password(pw, must_change=flag)
                if ctx is not None and i % 50 == 0:
                    ctx.check_cancelled()
                    ctx.progress(i, len(ids))
        elif options.password_by == "email_link":
            pending = self._links(conn, plan, rows, updates)
        writer.update_many("patrons", [(pid, {**u, "updated_at": writer.ts}) for pid, u in updates.items() if u])
        if pending is not None:
            for pid, u in updates.items():
                pending.after[pid] = {**u, "updated_at": writer.ts}
                pending.before[pid] = {c: rows[pid][c] for c in pending.after[pid]}
        return pending

    def _links(self, conn, plan: Plan, rows, updates) -> "_Pending":
        """A token per patron: its hash goes into the password (in the transaction), its link
        into a message sent by `after_commit` once the transaction has committed."""
        settings = mail.load_settings(conn)
        db_path = Path(conn.execute("PRAGMA database_list").fetchone()["file"])
        expires = date.today() + timedelta(days=LINK_DAYS)
        sep = "&" if "?" in settings.reset_url else "?"
        pending = _Pending(settings=settings, db_path=db_path)
        for c in plan.changes:
            r = rows[c.patron_id]
            token = secrets.token_urlsafe(32)
            pending.messages.append(mail.ResetMessage(
                patron_id=c.patron_id, barcode=r["barcode"], name=" ".join(
                    x for x in (r["first_name"], r["last_name"]) if x) or "library patron",
                to=first_email(r), link=Secret(f"{settings.reset_url}{sep}token={quote(token)}"),
                expires=expires.isoformat()))
            updates[c.patron_id]["password_hash"] = reset_record(token, expires)
        return pending

    def after_commit(self, ctx, plan: Plan, options: ResetOptions, data: "_Pending") -> None:
        """Send the reset links, the write lock released. A patron whose message was not sent
        (refused, connection lost, cancelled, server unreachable) gets the password and username
        it had back, in a second short transaction of the same run (undo covers both), and an
        error line; the others keep their new state."""
        pending = data
        settings, total = pending.settings, len(pending.messages)
        by_id = {c.patron_id: c for c in plan.changes}
        ctx.progress(0, total, force=True)
        last_info = [0]

        def progress(done: int, of: int) -> None:
            ctx.progress(done, of)
            if done // 100 > last_info[0] // 100:
                ctx.info(f"Reset messages: {done} of {of} done.", code="sending")
            last_info[0] = done

        try:
            delivery = mail.send_reset_links(
                settings, mail.get_password(pending.db_path) if settings.user else None, pending.messages,
                outbox=mail.outbox_path(pending.db_path), cancelled=lambda: ctx.cancelled, progress=progress)
        except mail.MailError as exc:
            # nothing was sent: everyone gets their password back, and the run fails saying why once
            left = self._put_back(ctx, plan, pending, {m.patron_id: "the reset link was not sent"
                                                       for m in pending.messages}, by_id)
            tail = ("every password is unchanged" if not left else
                    f"{total - left} passwords are unchanged; {left} could not be put back (see the errors)")
            raise RunFailed(f"{exc}: {tail}.") from None
        except Exception as exc:   # a failure of our own while sending: who got a link is unknown
            reason = f"the reset link may not have been sent (the sending stopped: {type(exc).__name__})"
            self._put_back(ctx, plan, pending, {m.patron_id: reason for m in pending.messages}, by_id)
            raise RunFailed(f"Sending the reset links stopped ({type(exc).__name__}): every password is put "
                            "back as it was, so a link already sent does not work; run the reset again.") from None
        ctx.progress(total, total, force=True)
        sent = set(delivery.sent)
        to = {m.patron_id: m.to for m in pending.messages}
        unsent = {pid: f"the reset link could not be sent to {to[pid]} ({reason})"
                  for pid, reason in delivery.failed}
        cancelled = [m.patron_id for m in pending.messages if m.patron_id not in sent and m.patron_id not in unsent]
        for pid in cancelled:
            unsent[pid] = "the reset link was not sent: the run was cancelled while sending"
        if unsent:
            self._put_back(ctx, plan, pending, unsent, by_id)
        if cancelled:
            ctx.warning(f"Cancelled while sending: {len(sent)} reset messages were sent; the {len(cancelled)} "
                        "patrons not yet sent keep the password they had.", code="cancelled_sending")
            plan.notes.append(f"The run was cancelled while sending: {len(cancelled)} patrons were not sent a "
                              "reset link; their passwords are unchanged.")
        if delivery.outbox is not None:
            plan.notes.append(f"No mail server is configured: the {len(sent)} reset messages were written to "
                              f"the outbox folder {delivery.outbox}; send them from there.")
        else:
            plan.notes.append(f"{len(sent)} reset messages were sent through {delivery.server}.")

    def _put_back(self, ctx, plan: Plan, pending: "_Pending", reasons: dict[int, str], by_id) -> int:
        """Give each patron in `reasons` the values it had before this run (the before-image), in
        one write transaction of the run; a patron changed by someone else since is left as it is.
        Appends each to plan.errors; returns how many could not be put back."""
        ids = sorted(reasons)
        left: dict[int, str] = {}
        try:
            with ctx.writer() as w:
                current = {r["id"]: r for r in w.conn.execute(
                    "SELECT id, password_hash, username, updated_at FROM patrons"
                    " WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))}
                items = []
                for pid in ids:
                    cur, after = current.get(pid), pending.after.get(pid, {})
                    if cur is None or any(cur[c] != v for c, v in after.items()):
                        left[pid] = "it was changed again since this run wrote it, so it was left as it is"
                        continue
                    items.append((pid, dict(pending.before[pid])))
                w.update_many("patrons", items)
        except DatabaseBusy:
            left = {pid: "the database stayed busy, so it could not be put back" for pid in ids}
        run = f"undo run {ctx.run_id} to put it back"
        for pid in ids:
            c = by_id[pid]
            if pid in left:
                reason = f"{reasons[pid]}; the password was NOT put back ({left[pid]}): {run}"
            else:
                reason = f"{reasons[pid]}; the password is unchanged"
            plan.errors.append(Skip(patron_id=pid, barcode=c.barcode, name=c.name, reason=reason))
        return len(left)


@dataclass
class _Pending:
    """What a Reset Patron Accounts run sends after its commit: the messages (links are
    Secrets), and each patron's changed columns before and after (hashes, never a token)."""

    settings: mail.MailSettings
    db_path: Path
    messages: list[mail.ResetMessage] = field(default_factory=list)
    before: dict[int, dict] = field(default_factory=dict, repr=False)
    after: dict[int, dict] = field(default_factory=dict, repr=False)
