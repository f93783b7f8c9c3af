"""The judge's answer cache: every valid answer, in one sqlite file, so a run never pays twice for one.

``<cache_dir>/answers.sqlite`` holds one row per answer, keyed by :func:`.request.request_key` = sha256 of
(model, prompt version, perspective, mode, image detail, sha256 of both images' bytes, instruction, and the
protocol when it is not the kit's). Resuming is then nothing special: a run looks every request up and sends
only the missing ones. A request that fails after all retries is not an answer, so it is never cached; the
next run asks it again.

What the cache guarantees, and how
----------------------------------
* **An answer written is never lost.** :meth:`AnswerCache.put` returns once its transaction is committed with
  ``synchronous=FULL``: the write-ahead log is fsync-ed, so neither a kill -9 nor a power cut loses it. A
  request holds its concurrency slot until then (:func:`.client.judge_many`), so a kill loses at most the
  answers in flight. Puts that arrive while a commit runs share the next one (:class:`.journal.GroupCommit`):
  durability costs one fsync per batch, not per answer.
* **A kill at any instant loses nothing committed.** A transaction is in the database or not at all; a kill
  mid-commit leaves a WAL frame whose checksum fails, and the next open ignores it.
* **Concurrent writers are safe**: asyncio tasks share one connection (behind a lock), processes share the
  file (WAL: readers never wait, writers take turns, waiting up to :data:`BUSY_TIMEOUT_S`). Two runs that
  answer the same question at once store the first answer; the second is dropped.
* **Records are re-validated on every read**: a row that no longer holds a valid answer (edited by hand)
  is not an answer; it is asked again, and the new answer replaces it.

Why sqlite rather than the append-only JSON-lines journal of earlier versions (``answers.jsonl``)
--------------------------------------------------------------------------------------------------
The journal was parsed in full, and held in memory, at every open; here a lookup reads one row, and answers
that another process commits are seen at once, not at the next open. There are no torn or duplicate lines
to skip. What it costs was measured before the switch, on a 2-core VM busy with other jobs (load 4-6), with
the same records as a real run:

* a 2,000-request :func:`.client.judge_many` run against the toy judge (own process, 50 ms latency,
  concurrency 32), fresh cache: 8.1 / 8.4 / 9.2 s with sqlite, 7.5 / 8.5 / 8.6 / 9.4 s with the journal
  (the same, within noise); resuming it (2,000 answers cached, nothing sent): 0.04 s with both;
* storage alone, 2,000 puts at concurrency 32: 0.22-0.32 s here, 0.13-0.20 s for the journal (one fsync per
  batch in both); at concurrency 1, ~1.0 s both (one fsync per answer);
* resuming 60,000 answers (a full RewardEdit20K annotation; one ``get`` and one ``lookup`` per request, as
  :mod:`.annotate` does): 1.8 s and +9 MB of memory here; 1.1-2.5 s and +269 MB for the journal, which
  parsed the whole file at open;
* the file is ~40% larger (2.2 MB against 1.6 MB per 2,000 answers).

Caches written before: ``answers.jsonl``
-----------------------------------------
A cache folder that holds the old ``answers.jsonl`` keeps working: opening the cache reads the lines it has
not read yet into ``answers.sqlite`` (in one transaction, remembering how far it read), so a course folder
made with an earlier version resumes without asking anything again, and answers that an earlier version of
the kit appends later are picked up at the next open. The old file is left as it was (an older kit can still
use it). ``AnswerCache`` accepts the path of either file as well as their folder, so code that still names
``<cache_dir>/answers.jsonl`` opens the same cache.

Limits: sqlite's WAL needs shared memory and working file locks between the processes that use the file, so
every process using one cache must run on the same machine, and sqlite does not support WAL on network or
FUSE file systems -- such as Google Drive mounted in Colab, where the course suggests keeping its outputs.
There (:func:`_shared_file_system`: nfs, cifs/smb, 9p, any ``fuse.*`` mount, read from ``/proc/mounts``),
and wherever switching to WAL fails, the cache keeps sqlite's rollback journal (``journal_mode=DELETE``,
``synchronous=FULL``): the same guarantees against a kill, with one writer at a time. While a WAL run writes,
``answers.sqlite-wal`` and ``-shm`` sit next to the file; they belong to it (copy or sync the three together,
or copy after the run, when closing has folded the log into the file).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from ..formats import MAX_SCORE
from . import prompts
from .journal import GroupCommit, parse_jsonl
from .prompts import Annotation, Verdict

#: The cache's file in its folder.
FILENAME = "answers.sqlite"
#: The file earlier versions kept the cache in (append-only JSON lines); read into :data:`FILENAME` on open.
LEGACY_FILENAME = "answers.jsonl"
#: How long a write waits for another process's write to finish before it fails (seconds).
BUSY_TIMEOUT_S = 60.0
#: The layout of the file (``PRAGMA user_version``); a file from a newer kit is refused, not misread.
SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS answers (
        key    TEXT PRIMARY KEY NOT NULL,  -- request_key of the question
        mode   TEXT NOT NULL,              -- "annotate" or "evaluate": how to validate the answer
        answer TEXT NOT NULL,              -- record["answer"] as JSON: what get() reads and validates
        record TEXT NOT NULL               -- the whole record as JSON (see AnswerCache)
    )""",
    """CREATE TABLE IF NOT EXISTS legacy_imports (
        name   TEXT PRIMARY KEY NOT NULL,  -- a JSON-lines cache of an earlier version, in the same folder
        offset INTEGER NOT NULL            -- how many of its bytes have been read into `answers`
    )""",
)
_SET_VERSION = f"PRAGMA user_version = {SCHEMA_VERSION}"
# The first valid answer for a key stays; a stored row that is not a valid answer (edited by hand) is replaced.
_UPSERT = ("INSERT INTO answers (key, mode, answer, record) VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
           "mode = excluded.mode, answer = excluded.answer, record = excluded.record "
           "WHERE NOT answer_ok(answers.mode, answers.answer)")


def _answer_from_record(mode: Any, answer: Any) -> Annotation | Verdict | None:
    """The validated answer stored in a cache record (``record["answer"]``, as :mod:`.prompts` produced it),
    or None if it is not one: a hand-edited or foreign record is asked again rather than trusted."""
    if mode not in prompts.MODES or not isinstance(answer, dict):
        return None
    score = answer.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= MAX_SCORE:
        return None
    if mode == "annotate":
        fb = answer.get("feedback")
        if not isinstance(score, int) or not isinstance(fb, str) or not fb.strip():
            return None
        return Annotation(score, fb)
    yes, reason = answer.get("yes"), answer.get("reason")
    if not isinstance(yes, bool) or not isinstance(reason, str):
        return None
    return Verdict(yes, float(score), reason)


def _stored_answer(mode: str, text: str) -> Annotation | Verdict | None:
    """The validated answer in an ``answer`` column, or None (not JSON, or not a valid answer)."""
    try:
        return _answer_from_record(mode, json.loads(text))
    except (TypeError, ValueError):
        return None


def _answer_ok(mode: str, text: str) -> bool:
    return _stored_answer(mode, text) is not None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _row(record: Mapping[str, Any]) -> tuple[str, str, str, str]:
    key, mode = record.get("key"), record.get("mode")
    if not isinstance(key, str) or not isinstance(mode, str):
        raise ValueError(f"a cache record needs a string key and mode, got {key!r} and {mode!r}")
    return key, mode, _dumps(record.get("answer")), _dumps(record)


#: File-system types on which sqlite's WAL (shared memory between processes) is not safe.
_NO_WAL_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse", "fuseblk")


def _mount_fstype(path: Path) -> str | None:
    """The file-system type of the mount holding ``path`` (Linux ``/proc/mounts``; ``None`` elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target, best, fstype = str(path.resolve()), -1, None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > best:
            best, fstype = len(point), parts[2]
    return fstype


def _shared_file_system(path: Path) -> bool:
    """Is ``path`` on a network or FUSE file system (Colab's Google Drive is ``fuse.drive``)?"""
    fstype = _mount_fstype(path)
    return fstype is not None and (fstype in _NO_WAL_FS or fstype.startswith("fuse."))


def _set_journal(con: sqlite3.Connection, path: Path) -> str:
    """WAL where the file system supports it, else (or if switching fails) the rollback journal; returns the
    mode in use ("wal" or "delete")."""
    if _shared_file_system(path.parent):
        con.execute("PRAGMA journal_mode=DELETE")
        return "delete"
    try:
        _set_wal(con)
        return "wal"
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise
        con.execute("PRAGMA journal_mode=DELETE")
        return "delete"


def _set_wal(con: sqlite3.Connection) -> None:
    """Put the file in WAL mode (once per file: the mode is stored in it).

    Switching needs the file to itself, and sqlite reports "database is locked" at once, without waiting,
    when another process opens the same new cache at that instant (seen with three writers starting
    together): so wait and try again, up to :data:`BUSY_TIMEOUT_S`.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(0.05, delay * 2)


class AnswerCache:
    """Valid answers on disk, keyed by :func:`.request.request_key`: ``<directory>/answers.sqlite``.

    Each record: ``key``, ``model``, ``protocol``, ``prompt_version``, ``perspective``, ``mode``, ``detail``,
    ``instruction``, the two image hashes, ``id``, ``answer`` (the validated fields), ``text`` (the raw
    answer), ``usage``, ``attempts``, ``time``, ``run``. Only ``key``, ``mode`` and ``answer`` are read back;
    the rest says where an answer came from.

    ``directory``: the cache's folder; the path of ``answers.sqlite`` or of an old ``answers.jsonl`` in it
    names the same cache. Nothing is created until the first answer is written, except that an old
    ``answers.jsonl`` there is read into ``answers.sqlite`` at once (module doc). ``skipped_lines``: lines of
    that old file that this open read and could not use (torn by a kill, or not a valid answer).
    """

    FILENAME = FILENAME

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        if directory.name in (FILENAME, LEGACY_FILENAME):
            directory = directory.parent
        self.directory = directory
        self.path = directory / FILENAME
        self.legacy_path = directory / LEGACY_FILENAME
        self.skipped_lines = 0
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._writer: GroupCommit | None = None
        #: "wal", or "delete" (the rollback journal) on a network / FUSE file system; None until first opened
        self.journal_mode: str | None = None
        if self.legacy_path.exists():
            with self._lock:
                self._import_legacy(self._connect())

    # -- reading --------------------------------------------------------------------------------------
    def get(self, key: str) -> Annotation | Verdict | None:
        """The cached answer to the question ``key``, or None (then ask it)."""
        row = self._select("SELECT mode, answer FROM answers WHERE key = ?", key)
        return None if row is None else _stored_answer(*row)

    def record(self, key: str) -> dict | None:
        """The whole record of the cached answer to ``key`` (raw text, usage, ...), or None."""
        found = self.lookup(key)
        return None if found is None else found[1]

    def lookup(self, key: str) -> tuple[Annotation | Verdict, dict] | None:
        """The cached answer to ``key`` and its whole record, in one read; None if there is no valid answer."""
        row = self._select("SELECT mode, answer, record FROM answers WHERE key = ?", key)
        answer = None if row is None else _stored_answer(row[0], row[1])
        if answer is None:
            return None
        try:
            rec = json.loads(row[2])
        except ValueError:
            rec = None
        return answer, rec if isinstance(rec, dict) else {}

    def records(self) -> list[dict]:
        """Every stored record, in the order they were written (for inspection and reports)."""
        with self._lock:
            con = self._connect(create=False)
            rows = [] if con is None else con.execute("SELECT record FROM answers ORDER BY rowid").fetchall()
        return [json.loads(text) for (text,) in rows]

    def __len__(self) -> int:
        with self._lock:
            con = self._connect(create=False)
            return 0 if con is None else int(con.execute("SELECT count(*) FROM answers").fetchone()[0])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def _select(self, sql: str, key: str) -> tuple | None:
        with self._lock:
            con = self._connect(create=False)
            return None if con is None else con.execute(sql, (key,)).fetchone()

    # -- writing --------------------------------------------------------------------------------------
    async def put(self, record: Mapping[str, Any]) -> None:
        """Store one answer record (``key``, ``mode`` and a valid ``answer`` at least); returns once it is
        committed, i.e. durable on disk. Concurrent puts share one commit."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.loop is not loop:
            self._writer = GroupCommit(self._write_many, loop)
        await self._writer.append(record)

    def _write_many(self, records: list[Mapping[str, Any]]) -> None:
        rows = [_row(r) for r in records]
        with self._lock:
            con = self._connect()
            self._transaction(con, lambda: con.executemany(_UPSERT, rows))

    def close(self) -> None:
        """Close the file (the last connection to close folds the write-ahead log into it)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def __enter__(self) -> "AnswerCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the file -------------------------------------------------------------------------------------
    def _connect(self, create: bool = True) -> sqlite3.Connection | None:
        """The connection (caller holds ``_lock``); None when the file does not exist and ``create`` is false."""
        if self._con is None:
            if not create and not self.path.exists():
                return None
            if sqlite3.sqlite_version_info < (3, 24, 0):  # ON CONFLICT ... DO UPDATE (2018)
                raise RuntimeError(f"the answer cache needs SQLite >= 3.24; this Python has {sqlite3.sqlite_version}")
            self.directory.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; each write is one explicit BEGIN IMMEDIATE..COMMIT.
            # check_same_thread=False: commits run in a worker thread (GroupCommit); _lock serialises all use.
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            try:
                self.journal_mode = _set_journal(con, self.path)
                con.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit: durable, not just kill-safe
                con.create_function("answer_ok", 2, _answer_ok, deterministic=True)
                version = con.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RuntimeError(f"{self.path} was written by a newer version of the kit (schema {version}, "
                                       f"this one reads {SCHEMA_VERSION}): upgrade the kit to use this cache")
                if version < SCHEMA_VERSION:
                    self._transaction(con, lambda: [con.execute(sql) for sql in (*_SCHEMA, _SET_VERSION)])
            except BaseException:
                con.close()
                raise
            self._con = con
        return self._con

    @staticmethod
    def _transaction(con: sqlite3.Connection, body: Any) -> None:
        """Run ``body`` in one write transaction (waits for other writers), committed or rolled back whole."""
        con.execute("BEGIN IMMEDIATE")
        try:
            body()
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _import_legacy(self, con: sqlite3.Connection) -> None:
        """Read the lines of ``answers.jsonl`` not read before into the table (caller holds ``_lock``).

        Remembers how many bytes it has read, up to the last complete line: a torn last line (left by a kill)
        is read again next time, in case an earlier version of the kit has since ended it and appended. A file
        that shrank was replaced, and is read again from the start (rows already stored are kept).
        """
        def body() -> None:
            row = con.execute("SELECT offset FROM legacy_imports WHERE name = ?", (LEGACY_FILENAME,)).fetchone()
            done = 0 if row is None else int(row[0])
            with open(self.legacy_path, "rb") as f:
                size = f.seek(0, 2)
                start = done if size >= done else 0
                if size == start:
                    return
                f.seek(start)
                raw = f.read(size - start)
            records, bad = parse_jsonl(raw)
            rows = []
            for rec in records:
                key, mode = rec.get("key"), rec.get("mode")
                if not isinstance(key, str) or _answer_from_record(mode, rec.get("answer")) is None:
                    bad += 1
                    continue
                rows.append(_row(rec))
            con.executemany(_UPSERT, rows)
            end = start + raw.rfind(b"\n") + 1
            con.execute("INSERT INTO legacy_imports (name, offset) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                        "SET offset = excluded.offset", (LEGACY_FILENAME, end))
            self.skipped_lines += bad

        self._transaction(con, body)
