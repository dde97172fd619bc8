"""The versioned schema of the patron store and its migrations.

`PRAGMA user_version` holds the schema version. Each migration is a list of SQL
statements applied in one `BEGIN IMMEDIATE` transaction; a database newer than
this code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from patron_tui.store.db import write_transaction


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_V1 = (
    # --- reference tables -------------------------------------------------
    """CREATE TABLE sites (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        is_union INTEGER NOT NULL DEFAULT 0 CHECK (is_union IN (0, 1))
    )""",
    # exactly one Union Site at most
    "CREATE UNIQUE INDEX sites_one_union ON sites(is_union) WHERE is_union = 1",
    """CREATE TABLE grades (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        position INTEGER NOT NULL UNIQUE,
        is_last INTEGER NOT NULL DEFAULT 0 CHECK (is_last IN (0, 1))
    )""",
    "CREATE UNIQUE INDEX grades_one_last ON grades(is_last) WHERE is_last = 1",
    """CREATE TABLE policies (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        account_days INTEGER NOT NULL DEFAULT 365 CHECK (account_days >= 0),
        loan_days INTEGER NOT NULL DEFAULT 14 CHECK (loan_days >= 0)
    )""",
    """CREATE TABLE security_groups (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        security_level INTEGER NOT NULL CHECK (security_level >= 0)
    )""",
    "CREATE TABLE patron_types (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL)",
    "CREATE TABLE access_levels (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL)",
    "CREATE TABLE personas (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL)",
    "CREATE TABLE statuses (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL)",
    "CREATE TABLE media (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL)",
    "CREATE TABLE subjects (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, name TEXT NOT NULL)",
    """CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE operators (
        id INTEGER PRIMARY KEY,
        login_name TEXT NOT NULL UNIQUE,
        display_name TEXT NOT NULL DEFAULT '',
        security_level INTEGER NOT NULL DEFAULT 5 CHECK (security_level >= 0),
        may_manage_district_patrons INTEGER NOT NULL DEFAULT 0,
        may_use_batch_tools INTEGER NOT NULL DEFAULT 0,
        may_reset_passwords INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    )""",
    # --- patrons ----------------------------------------------------------
    # Codes (site, grade, policy, ...) are stored as text, not foreign keys:
    # imports deliver codes that may not be in the reference tables yet, and
    # "Check database" reports them instead of the store refusing the row.
    """CREATE TABLE patrons (
        id INTEGER PRIMARY KEY,
        barcode TEXT,
        district_id TEXT,
        site TEXT NOT NULL,
        last_name TEXT NOT NULL DEFAULT '',
        first_name TEXT NOT NULL DEFAULT '',
        middle_name TEXT NOT NULL DEFAULT '',
        nickname TEXT NOT NULL DEFAULT '',
        patron_type TEXT NOT NULL DEFAULT '',
        access_level TEXT NOT NULL DEFAULT '',
        persona TEXT NOT NULL DEFAULT '',
        grade TEXT NOT NULL DEFAULT '',
        graduation_year INTEGER,
        homeroom TEXT NOT NULL DEFAULT '',
        location2 TEXT NOT NULL DEFAULT '',
        policy TEXT NOT NULL DEFAULT '',
        security_group TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'Active',
        gender TEXT NOT NULL DEFAULT '',
        username TEXT,
        password_hash TEXT,
        email TEXT NOT NULL DEFAULT '',
        email2 TEXT NOT NULL DEFAULT '',
        phone TEXT NOT NULL DEFAULT '',
        birthdate TEXT,
        account_expires TEXT,
        picture BLOB,
        protected INTEGER NOT NULL DEFAULT 0 CHECK (protected IN (0, 1)),
        is_system INTEGER NOT NULL DEFAULT 0 CHECK (is_system IN (0, 1)),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_seen_import_at TEXT,
        inactive_since TEXT
    )""",
    "CREATE UNIQUE INDEX patrons_barcode ON patrons(barcode) WHERE barcode IS NOT NULL",
    "CREATE UNIQUE INDEX patrons_district_id ON patrons(district_id) WHERE district_id IS NOT NULL",
    "CREATE UNIQUE INDEX patrons_username ON patrons(username) WHERE username IS NOT NULL",
    "CREATE INDEX patrons_site ON patrons(site)",
    "CREATE INDEX patrons_status ON patrons(status)",
    "CREATE INDEX patrons_name ON patrons(last_name, first_name)",
    "CREATE INDEX patrons_grade ON patrons(grade)",
    """CREATE TABLE notes (
        id INTEGER PRIMARY KEY,
        patron_id INTEGER NOT NULL REFERENCES patrons(id) ON DELETE CASCADE,
        note_type TEXT NOT NULL CHECK (note_type IN ('Contact', 'General', 'Alert', 'Category')),
        text TEXT NOT NULL CHECK (length(text) <= 500),
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX notes_patron ON notes(patron_id)",
    """CREATE TABLE charges (
        id INTEGER PRIMARY KEY,
        patron_id INTEGER NOT NULL REFERENCES patrons(id),
        kind TEXT NOT NULL CHECK (kind IN ('lost', 'overdue', 'other')),
        description TEXT NOT NULL DEFAULT '',
        item_barcode TEXT,
        title TEXT NOT NULL DEFAULT '',
        amount_cents INTEGER NOT NULL,
        balance_cents INTEGER NOT NULL,
        accumulating INTEGER NOT NULL DEFAULT 0 CHECK (accumulating IN (0, 1)),
        transaction_date TEXT NOT NULL,
        forgiven_at TEXT,
        forgiven_by TEXT
    )""",
    "CREATE INDEX charges_patron ON charges(patron_id)",
    """CREATE TABLE checkouts (
        id INTEGER PRIMARY KEY,
        patron_id INTEGER NOT NULL REFERENCES patrons(id),
        item_barcode TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        site TEXT NOT NULL DEFAULT '',
        checked_out_at TEXT NOT NULL,
        due_at TEXT NOT NULL
    )""",
    "CREATE INDEX checkouts_patron ON checkouts(patron_id)",
    """CREATE TABLE holds (
        id INTEGER PRIMARY KEY,
        patron_id INTEGER NOT NULL REFERENCES patrons(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('hold', 'reservation')),
        title TEXT NOT NULL DEFAULT '',
        site TEXT NOT NULL DEFAULT '',
        placed_at TEXT NOT NULL,
        expires_at TEXT
    )""",
    "CREATE INDEX holds_patron ON holds(patron_id)",
    """CREATE TABLE patron_history (
        id INTEGER PRIMARY KEY,
        patron_id INTEGER NOT NULL REFERENCES patrons(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('payment', 'renewal', 'lost', 'refund', 'return', 'lexile')),
        occurred_at TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        amount_cents INTEGER,
        lexile INTEGER,
        detail TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX patron_history_patron ON patron_history(patron_id)",
    """CREATE TABLE reviews (
        id INTEGER PRIMARY KEY,
        patron_id INTEGER NOT NULL REFERENCES patrons(id),
        title TEXT NOT NULL,
        rating INTEGER CHECK (rating BETWEEN 1 AND 5),
        text TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX reviews_patron ON reviews(patron_id)",
    # --- talking-book catalog, per-medium profiles, service queue ----------
    """CREATE TABLE titles (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL,
        author TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE title_media (
        title_id INTEGER NOT NULL REFERENCES titles(id) ON DELETE CASCADE,
        medium TEXT NOT NULL,
        PRIMARY KEY (title_id, medium)
    )""",
    "CREATE INDEX title_media_medium ON title_media(medium)",
    """CREATE TABLE title_subjects (
        title_id INTEGER NOT NULL REFERENCES titles(id) ON DELETE CASCADE,
        subject TEXT NOT NULL,
        PRIMARY KEY (title_id, subject)
    )""",
    "CREATE INDEX title_subjects_subject ON title_subjects(subject)",
    """CREATE TABLE patron_profiles (
        id INTEGER PRIMARY KEY,
        patron_id INTEGER NOT NULL REFERENCES patrons(id) ON DELETE CASCADE,
        medium TEXT NOT NULL,
        status_of_service TEXT NOT NULL DEFAULT 'Active',
        max_items_out INTEGER NOT NULL DEFAULT 3,
        items_per_shipment INTEGER NOT NULL DEFAULT 1,
        service_frequency TEXT NOT NULL DEFAULT 'Weekly',
        next_service_date TEXT,
        duplication_circulation INTEGER NOT NULL DEFAULT 0,
        auto_select INTEGER NOT NULL DEFAULT 1,
        nightly_debug INTEGER NOT NULL DEFAULT 0,
        queue_length INTEGER NOT NULL DEFAULT 20,
        UNIQUE (patron_id, medium)
    )""",
    """CREATE TABLE profile_subjects (
        profile_id INTEGER NOT NULL REFERENCES patron_profiles(id) ON DELETE CASCADE,
        subject TEXT NOT NULL,
        PRIMARY KEY (profile_id, subject)
    )""",
    """CREATE TABLE service_queue (
        id INTEGER PRIMARY KEY,
        profile_id INTEGER NOT NULL REFERENCES patron_profiles(id) ON DELETE CASCADE,
        title_id INTEGER NOT NULL REFERENCES titles(id),
        position INTEGER NOT NULL,
        added_at TEXT NOT NULL,
        UNIQUE (profile_id, title_id)
    )""",
    # --- query sets ---------------------------------------------------------
    """CREATE TABLE query_sets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        statement TEXT NOT NULL,
        frozen_at TEXT,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE query_set_members (
        set_id INTEGER NOT NULL REFERENCES query_sets(id) ON DELETE CASCADE,
        patron_id INTEGER NOT NULL,
        PRIMARY KEY (set_id, patron_id)
    ) WITHOUT ROWID""",
    # --- jobs, runs, run messages, the change journal ------------------------
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        source_kind TEXT NOT NULL CHECK (source_kind IN ('directory', 'sftp')),
        path TEXT NOT NULL DEFAULT '',
        sftp_url TEXT NOT NULL DEFAULT '',
        sftp_port INTEGER NOT NULL DEFAULT 22,
        sftp_user TEXT NOT NULL DEFAULT '',
        file_name TEXT NOT NULL DEFAULT '',
        properties_path TEXT NOT NULL DEFAULT '',
        encoding TEXT,
        schedule TEXT NOT NULL DEFAULT '{}',
        options TEXT NOT NULL DEFAULT '{}',
        inactivation TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        title TEXT NOT NULL,
        job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        mode TEXT,
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'running', 'succeeded', 'failed',
                              'cancelled', 'interrupted', 'missed')),
        operator TEXT NOT NULL,
        started_by TEXT NOT NULL DEFAULT 'operator' CHECK (started_by IN ('operator', 'scheduler')),
        params TEXT NOT NULL DEFAULT '{}',
        summary TEXT NOT NULL DEFAULT '{}',
        error TEXT,
        progress_done INTEGER NOT NULL DEFAULT 0,
        progress_total INTEGER,
        owner_host TEXT,
        owner_pid INTEGER,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    )""",
    "CREATE INDEX runs_status ON runs(status)",
    "CREATE INDEX runs_job ON runs(job_id, id)",
    """CREATE TABLE run_messages (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        ts TEXT NOT NULL,
        level TEXT NOT NULL CHECK (level IN ('info', 'warning', 'skipped', 'error')),
        code TEXT NOT NULL DEFAULT '',
        line INTEGER,
        barcode TEXT,
        patron_id INTEGER,
        text TEXT NOT NULL
    )""",
    "CREATE INDEX run_messages_run ON run_messages(run_id, level)",
    # op 'insert_range' journals a bulk load as one row, no images (undo deletes
    # what it names): row_key 'first..last' (ids), 'rowid first..last', or a
    # scope as JSON such as {"set_id":5} (every row of that scope). A 'delete'
    # whose row_key is a scope holds the deleted rows column-wise in `before`.
    """CREATE TABLE change_journal (
        id INTEGER PRIMARY KEY,
        run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
        operator TEXT NOT NULL,
        ts TEXT NOT NULL,
        table_name TEXT NOT NULL,
        row_key TEXT NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete', 'insert_range')),
        before TEXT,
        after TEXT
    )""",
    "CREATE INDEX change_journal_run ON change_journal(run_id)",
    "CREATE INDEX change_journal_row ON change_journal(table_name, row_key)",
)

# Indexes the search statements use (services/queries.py). Text equality and `~`
# ignore A-Z case, so the text indexes are NOCASE: a BINARY index cannot serve
# `last_name = ? COLLATE NOCASE` or the LIKE range of `last ~ "o'br*"`. Coded fields
# (status, site, grade, type) get none on purpose: without ANALYZE statistics SQLite
# would take such an index for `status = Active` and sort 900,000 rows for the first
# screen, where walking patrons_name in list order finds 25 matches at once.
_V2 = (
    "CREATE INDEX patrons_last_nocase ON patrons(last_name COLLATE NOCASE)",
    # homeroom = X: the patrons of one homeroom come out of this index already in list
    # order (last_name, first_name, then the rowid = id), so the first screen sorts nothing
    "CREATE INDEX patrons_homeroom_nocase ON patrons(homeroom COLLATE NOCASE, last_name, first_name)",
    # balance and open charges: one covering lookup per patron, forgiven charges left out
    "CREATE INDEX charges_open ON charges(patron_id, balance_cents) WHERE forgiven_at IS NULL",
    # overdue: covering (patron_id, due_at)
    "CREATE INDEX checkouts_patron_due ON checkouts(patron_id, due_at)",
    # note = Alert: covering (patron_id, note_type)
    "CREATE INDEX notes_patron_type ON notes(patron_id, note_type)",
)

# The import engine (services/imports/engine.py): a content fingerprint of the mapped fields
# a patron was last imported with (Incremental skips records whose fingerprint is unchanged),
# and a free-text flag for patrons that need staff attention (barcode conflicts, later).
_V3 = (
    "ALTER TABLE patrons ADD COLUMN import_fingerprint TEXT",
    "ALTER TABLE patrons ADD COLUMN flagged TEXT",
)

_V4 = (
    # one row per record an import skipped because a unique value (barcode, district ID,
    # username) belongs to another patron: the incoming record is kept whole so the
    # conflict can be resolved from the job summary (keep / move / edit)
    """CREATE TABLE import_conflicts (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        line INTEGER,
        field TEXT NOT NULL CHECK (field IN ('barcode', 'district_id', 'username')),
        value TEXT NOT NULL,
        holder_id INTEGER REFERENCES patrons(id) ON DELETE SET NULL,
        target_id INTEGER REFERENCES patrons(id) ON DELETE SET NULL,
        incoming TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'kept', 'moved', 'edited')),
        new_value TEXT,
        resolved_at TEXT,
        resolved_by TEXT,
        resolution_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL
    )""",
    "CREATE INDEX import_conflicts_run ON import_conflicts(run_id, status)",
    # the fingerprint becomes a 64-bit hash of the source line, as 16 hex digits (Incremental
    # loads every stored one into a set with one group_concat); the old ones (a hash of the
    # mapped fields) are dropped, so the first Incremental after this upgrade compares every
    # record once
    "ALTER TABLE patrons DROP COLUMN import_fingerprint",
    "ALTER TABLE patrons ADD COLUMN import_fingerprint TEXT",
)

# Scheduled patron updates (services/jobs/): SFTP key authentication, and one lease row per
# job. The lease is held (owner, expires_at) while a run of the job executes, so a job never
# runs twice at once, whichever process starts it; `last_slot` is the latest scheduled time
# (UTC) a scheduler has claimed, so two schedulers on one database start each slot once.
_V5 = (
    "ALTER TABLE jobs ADD COLUMN sftp_auth TEXT NOT NULL DEFAULT 'password'"
    " CHECK (sftp_auth IN ('password', 'key'))",
    "ALTER TABLE jobs ADD COLUMN sftp_key_path TEXT NOT NULL DEFAULT ''",
    """CREATE TABLE job_leases (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        owner TEXT,
        acquired_at TEXT,
        expires_at TEXT,
        last_slot TEXT
    )""",
)

# Batch profile updates (services/batch.py) ask the service-queue filler
# (services/queue_fill.py) to fill the queues of the profiles they touched: one request row
# per profile, done when the filler has filled that queue (in the same transaction as the
# queue rows it wrote), so a killed filler resumes at the first request not done and never
# fills a queue twice. At most one request per profile is pending at a time.
_V6 = (
    """CREATE TABLE queue_fill_requests (
        id INTEGER PRIMARY KEY,
        profile_id INTEGER NOT NULL REFERENCES patron_profiles(id) ON DELETE CASCADE,
        run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
        requested_at TEXT NOT NULL,
        done_at TEXT,
        fill_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
        added INTEGER
    )""",
    "CREATE UNIQUE INDEX queue_fill_pending ON queue_fill_requests(profile_id) WHERE done_at IS NULL",
    "CREATE INDEX queue_fill_profile ON queue_fill_requests(profile_id)",
)

# Backups (services/backup.py): the setting that makes the Inactivation/Deletion rules and Remove
# Patrons take a backup first, added to existing databases (new ones get it from defaults.SETTINGS).
_V7 = (
    # only into a database that has its settings already (a new one gets them all when seeded)
    "INSERT OR IGNORE INTO settings (key, value) SELECT 'backup_before_destructive', 'off'"
    " WHERE EXISTS (SELECT 1 FROM settings)",
)

# Undo and the audit trail (services/undo.py, services/audit.py): the journal's retention in days,
# added to existing databases (a new one gets it from defaults.SETTINGS when it is seeded, after
# the migrations: hence the EXISTS), and a partial index of the few journal rows whose key is a
# range ('a..b', 'rowid a..b') or a scope ('{...}': stamps, scoped loads and deletes), so a patron's
# history and an undo's conflict check find the bulk rows that cover a key without a scan.
_V8 = (
    "INSERT INTO settings (key, value) SELECT 'journal_retention_days', '400'"
    " WHERE EXISTS (SELECT 1 FROM settings)"
    " AND NOT EXISTS (SELECT 1 FROM settings WHERE key = 'journal_retention_days')",
    "CREATE INDEX change_journal_ranges ON change_journal(table_name, id)"
    " WHERE op = 'insert_range' OR substr(row_key, 1, 1) = '{'",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "patron store, reference tables, catalog, jobs, runs, journal", _V1),
    Migration(2, "indexes for search statements", _V2),
    Migration(3, "import fingerprint and flag columns on patrons", _V3),
    Migration(4, "import conflicts kept for resolution; import fingerprints of source lines", _V4),
    Migration(5, "scheduled jobs: SFTP key authentication, job leases", _V5),
    Migration(6, "service-queue fill requests of batch profile updates", _V6),
    Migration(7, "setting: back up before destructive runs", _V7),
    Migration(8, "journal retention setting; index of the journal's range and scope rows", _V8),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


class SchemaTooNew(RuntimeError):
    """The database was written by a newer patron-tui: `version` is its schema, `known` ours."""

    def __init__(self, message: str, *, version: int = 0, known: int = 0) -> None:
        super().__init__(message)
        self.version, self.known = version, known


def current_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Bring the schema up to date; returns the versions applied."""
    applied: list[int] = []
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {version} is newer than this patron-tui "
            f"(knows up to {SCHEMA_VERSION}); upgrade patron-tui",
            version=version, known=SCHEMA_VERSION,
        )
    for migration in MIGRATIONS:
        if migration.version <= version:
            continue
        with write_transaction(conn):
            # re-read inside the lock: another process may have migrated meanwhile
            if current_version(conn) >= migration.version:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {migration.version}")
        applied.append(migration.version)
    return applied
