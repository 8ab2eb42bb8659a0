"""An append-only JSON-lines cache of paid judge answers, so a crash or Ctrl-C loses nothing.

Each answer is one line ``{"key", "judge_model", "task", "order", "answer", "verdict"}`` appended
(then flushed and fsynced) the moment it arrives. ``key`` is the SHA-256 of (judge model,
template, prompt, response A, response B, order): change any of them and the request is new;
rerun with the same inputs and the answer is read back instead of bought again. Only answers
are stored, never errors, so a request that failed is simply tried again on the next run.

A line cut short by a crash (the last line of the file) is skipped with a warning, and the next
append starts on a fresh line.

Several processes may share one cache file (two judge runs started on the same outputs) and
never pay twice for a request: before asking, a process claims the request key by creating
``<cache>.claims/<key>`` (atomic ``O_EXCL``); another process that wants the same key waits
until the answer appears in the file (it re-reads the lines appended since its last look), or
takes over when the claim is released without an answer or its owner has died. Taking over a
dead process's claim is atomic: under an ``flock`` on ``<cache>.claims/.takeover.lock`` the claim
is read again and replaced only if it still names the dead process, so of two processes that
find the same dead claim at once exactly one asks. Appends hold an ``flock`` on ``<cache>.lock``. Reading keeps one entry per key and counts repeats
(``duplicate_lines``), so a file written by older versions, which could hold a request twice,
still reads correctly.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: claims still work, appends are not locked across processes
    fcntl = None


def request_key(judge_model: str, template: str, prompt: str, response_a: str, response_b: str, order: str) -> str:
    """SHA-256 hex digest identifying one judge request (the six fields, JSON-encoded)."""
    payload = json.dumps([judge_model, template, prompt, response_a, response_b, order], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """Answers by request key, loaded from and appended to ``path`` (in memory only when None).

    Attributes:
        skipped_lines: lines of the file that could not be read (a crash's partial last line).
        duplicate_lines: lines whose key an earlier line already had (the first answer is kept).
    """

    poll_seconds = 0.1  # how often a process waiting for another's answer re-reads the file

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.skipped_lines = 0
        self.duplicate_lines = 0
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._offset = 0  # bytes of the file read so far
        self._line_number = 0
        self.refresh()

    def refresh(self) -> None:
        """Read the lines appended since the last look (by this or another process).

        Appends hold an exclusive lock and this read a shared one, so bytes after the last
        newline are never a write in progress: they are a crash's partial line, read (and, being
        unreadable, skipped with a warning) like any other line.
        """
        if self.path is None or not self.path.exists():
            return
        with self._lock, self._file_lock(shared=True), self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
            self._offset += len(data)
            for raw in data.splitlines():
                self._line_number += 1
                self._read_line(raw)

    @contextmanager
    def _file_lock(self, shared: bool = False) -> Iterator[None]:
        """An flock on ``<cache>.lock`` (shared for reading, exclusive for appending)."""
        if self.path is None or fcntl is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            entry = json.loads(raw.decode("utf-8"))
            key = entry["key"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            self.skipped_lines += 1
            warnings.warn(f"{self.path}: skipping unreadable cache line {self._line_number} "
                          "(an interrupted write?); its request will be made again", stacklevel=4)
            return
        if key in self._entries:
            self.duplicate_lines += 1
            return
        self._entries[key] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> dict | None:
        """The cached entry for ``key``, or None."""
        return self._entries.get(key)

    def append(self, entry: Mapping[str, Any]) -> None:
        """Store ``entry`` (it must hold ``"key"``): one line, flushed and fsynced before returning."""
        if not isinstance(entry.get("key"), str):
            raise ValueError(f"a cache entry needs a string 'key', got {entry.get('key')!r:.40}")
        line = (json.dumps(dict(entry), ensure_ascii=False) + "\n").encode("utf-8")
        if self.path is not None:
            with self._lock, self._file_lock():
                with self.path.open("a+b") as handle:
                    handle.seek(0, os.SEEK_END)
                    if handle.tell() > 0:
                        handle.seek(-1, os.SEEK_END)
                        if handle.read(1) != b"\n":  # a crash's partial line: start a fresh one
                            handle.write(b"\n")
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())
        with self._lock:
            self._entries.setdefault(entry["key"], dict(entry))

    # ---- claims: one process asks each request ------------------------------------------------
    def _claim_path(self, key: str) -> Path:
        return self.path.with_name(self.path.name + ".claims") / key

    @staticmethod
    def _claim_owner(claim: Path) -> int | None:
        """The pid written in ``claim``, or None when it is gone (released) or unreadable."""
        try:
            return int(claim.read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _owner_is_dead(pid: int) -> bool:
        """No process ``pid`` runs on this machine (a judge killed mid-request left its claim)."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _take_over(self, claim: Path, dead_pid: int) -> bool:
        """Replace the claim of the dead process ``dead_pid`` by ours; True when this process now holds it.

        Under an exclusive lock the claim is read again: another process may have taken it over
        (or released it) since this one found it dead, and then it is left alone. Without the
        lock, two processes that both found the dead claim could both remove a claim and both
        create one, and both would ask the judge.
        """
        with self._takeover_lock(claim.parent):
            if self._claim_owner(claim) != dead_pid:
                return False
            claim.unlink(missing_ok=True)
            return self._try_claim(claim)

    @staticmethod
    @contextmanager
    def _takeover_lock(claims: Path) -> Iterator[None]:
        """An exclusive flock on ``<claims>/.takeover.lock`` (no lock where fcntl is missing)."""
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        with open(claims / ".takeover.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _try_claim(claim: Path) -> bool:
        """Create ``claim`` holding this pid, atomically (a hard link of a complete file): False if it exists."""
        draft = claim.with_name(f".{claim.name}.{os.getpid()}.{threading.get_ident()}")
        draft.write_text(str(os.getpid()))
        try:
            os.link(draft, claim)
            return True
        except FileExistsError:
            return False
        finally:
            draft.unlink(missing_ok=True)

    def acquire(self, key: str) -> bool:
        """Claim ``key`` for this process; True: ask it now (then :meth:`release`), False: answered elsewhere.

        Waits while another live process holds the claim, re-reading the file for its answer.
        """
        if self.path is None:
            return key not in self._entries
        claim = self._claim_path(key)
        claim.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self.refresh()
            if key in self._entries:
                return False
            if not self._try_claim(claim):
                owner = self._claim_owner(claim)
                if owner is None or not self._owner_is_dead(owner):
                    time.sleep(self.poll_seconds)  # a live process is asking: wait for its answer
                    continue
                if not self._take_over(claim, owner):  # its owner was killed mid-request
                    continue  # another process took it over first
            self.refresh()  # answered between our last look and the claim?
            if key in self._entries:
                self.release(key)
                return False
            return True

    def release(self, key: str) -> None:
        """Give up the claim on ``key`` (after its answer was appended, or after it failed)."""
        if self.path is not None:
            self._claim_path(key).unlink(missing_ok=True)
