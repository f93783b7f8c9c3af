"""Append-only JSON lines whose appends are durable when they return: the run journals' format.

Why JSON lines for a journal: an append of one line is the only write, nothing is ever rewritten, so no write
can destroy an earlier record; a kill at any instant leaves at worst a torn last line, which readers skip and
the next writer ends with a newline, so it never glues onto a new record; and the file is greppable. Each
batch of lines is written, flushed and ``fsync``-ed before its appends return (:class:`GroupCommit`: one
fsync serves every record that arrived meanwhile).

:mod:`.annotate` writes its run journal with :class:`JsonlLog`; the answer cache was such a file before it
moved to sqlite, and :mod:`.cache` reads old ones with :func:`read_jsonl`.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .. import plumbing


read_jsonl = plumbing.read_jsonl_tolerant  # a journal's records, and how many torn / bad lines were skipped


def parse_jsonl(raw: bytes) -> tuple[list[dict], int]:
    """:func:`read_jsonl` of bytes already read (e.g. the part of a file appended since it was last read)."""
    return plumbing.parse_jsonl(raw, skip_bad=True)


class JsonlLog:
    """An append-only JSON-lines file whose appends are durable (written, flushed, fsync-ed) when they return.

    Opening it ends a torn last line (left by a kill) with a newline, so a new record never glues onto it.
    The file and its folder are created on the first append, not before.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh: Any = None
        self._lock = threading.Lock()
        self._writer: GroupCommit | None = None

    def _open(self) -> Any:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "ab")
            size = fh.seek(0, os.SEEK_END)
            if size:
                with open(self.path, "rb") as r:
                    r.seek(size - 1)
                    if r.read(1) != b"\n":
                        fh.write(b"\n")
                        fh.flush()
                        os.fsync(fh.fileno())
            self._fh = fh
        return self._fh

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records as one write and one fsync (blocking)."""
        if not records:
            return
        data = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                        for r in records)
        with self._lock:
            fh = self._open()
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def append_now(self, record: Mapping[str, Any]) -> None:
        self.append_many([record])

    async def append(self, record: Mapping[str, Any]) -> None:
        """Append from async code: returns once the record is durable; concurrent appends share one fsync."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.loop is not loop:
            self._writer = GroupCommit(self.append_many, loop)
        await self._writer.append(record)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class GroupCommit:
    """Batches the records that arrive while a durable write is running into the next write (in a thread).

    ``write_many(records)`` must make all of ``records`` durable, or raise; every waiter of the batch gets its
    outcome. One fsync (or one sqlite commit: :mod:`.cache`) then serves every answer that arrived meanwhile, so
    the cost of durability does not grow with concurrency. Bound to one event loop (``loop``).
    """

    def __init__(self, write_many: Callable[[list[Any]], None], loop: asyncio.AbstractEventLoop):
        self.write_many, self.loop = write_many, loop
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def append(self, record: Any) -> None:
        """Returns once ``record`` is durable (raises what the write raised)."""
        fut = self.loop.create_future()
        self._pending.append((record, fut))
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        # Single-threaded event loop: between the last emptiness check and this task finishing there is no
        # await, so an append either joins a batch or sees the task done and starts a new one.
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self.write_many, [r for r, _ in batch])
            except BaseException as e:  # noqa: BLE001 - handed to every waiter
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
                if not isinstance(e, Exception):
                    raise
                continue
            for _, f in batch:
                if not f.done():
                    f.set_result(None)
