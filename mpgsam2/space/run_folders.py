"""Per-session temporary folders: a fresh sub-folder per run, a stop flag, and their removal."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)


_SESSION_DIR = re.compile(r"[0-9a-f]{32}")


def _session_key(session_hash: str | None) -> str:
    """A folder name for a session: a digest, since the session hash is chosen by the client."""
    return hashlib.sha256((session_hash or "no-session").encode("utf-8")).hexdigest()[:32]


class RunFolders:
    """One temporary folder per session, a fresh sub-folder per run, a stop flag, and their removal.

    Layout: ``root/<digest of the session hash>/run-<random hex>/``. :meth:`run` hands out a run folder for
    the duration of a run and prunes the session's finished runs beyond ``keep_runs`` (the app has handed
    their files to Gradio, which serves its own copies). :meth:`remove` deletes a session's folder when the
    session ends, or as soon as its last running job finishes: Gradio reports a session as ended whenever
    its heartbeat connection drops, which a client may do in the middle of a run. :meth:`sweep` deletes the
    folders of sessions idle for ``max_idle_s``, and :meth:`close` everything.
    """

    STOP_FILE = "STOP"

    def __init__(
        self, root: str | os.PathLike | None = None, max_idle_s: float = 2 * 3600, keep_runs: int = 2
    ):
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mpgsam2-sessions-"))
            self._owns_root = True
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
            self._owns_root = False
        self.max_idle_s = max_idle_s
        self.keep_runs = max(1, keep_runs)
        self._lock = threading.Lock()
        self._active: dict[str, set[Path]] = {}  # session key -> its running jobs' folders
        self._ended: set[str] = set()  # sessions to remove when their last running job ends

    def folder(self, session_hash: str | None) -> Path:
        """The session's folder (it may not exist yet)."""
        return self.root / _session_key(session_hash)

    @contextmanager
    def run(self, session_hash: str | None) -> Iterator[Path]:
        """A new, empty run folder for the duration of a run.

        Entering clears the session's stop flag and prunes its oldest finished runs; leaving removes the
        session's folder if the session ended meanwhile.
        """
        key = _session_key(session_hash)
        with self._lock:
            self._ended.discard(key)
            folder = self.folder(session_hash)
            folder.mkdir(parents=True, exist_ok=True)
            os.utime(folder)
            self.stop_flag(session_hash).unlink(missing_ok=True)
            active = self._active.setdefault(key, set())
            finished = [p for p in folder.glob("run-*") if p.is_dir() and p not in active]
            finished.sort(key=lambda p: p.stat().st_mtime)
            for old in finished[: max(0, len(finished) - self.keep_runs + 1)]:
                shutil.rmtree(old, ignore_errors=True)
            run_dir = folder / f"run-{uuid.uuid4().hex}"
            run_dir.mkdir()
            active.add(run_dir)
        try:
            yield run_dir
        finally:
            with self._lock:
                active.discard(run_dir)
                if not active:
                    del self._active[key]
                    if key in self._ended:
                        self._ended.discard(key)
                        shutil.rmtree(folder, ignore_errors=True)
                        logger.info("removed the files of an ended session")

    def running(self, session_hash: str | None) -> int:
        """How many runs of the session are in progress."""
        with self._lock:
            return len(self._active.get(_session_key(session_hash), ()))

    def stop_flag(self, session_hash: str | None) -> Path:
        """The file whose existence asks the session's current run to stop (visible across processes)."""
        return self.folder(session_hash) / self.STOP_FILE

    def request_stop(self, session_hash: str | None) -> bool:
        """Ask the session's running jobs to stop after their current frame; False if none is running."""
        with self._lock:
            if not self._active.get(_session_key(session_hash)):
                return False
            self.stop_flag(session_hash).touch()
            return True

    def remove(self, session_hash: str | None) -> bool:
        """The session ended: delete its folder now, or when its last running job ends (returns False)."""
        key = _session_key(session_hash)
        with self._lock:
            if self._active.get(key):
                self._ended.add(key)
                return False
            folder = self.folder(session_hash)
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                logger.info("removed the files of an ended session")
            return True

    def sweep(self, now: float | None = None) -> list[Path]:
        """Delete the folders of sessions idle (no run started, none running) for more than ``max_idle_s``."""
        now = time.time() if now is None else now
        removed = []
        with self._lock:
            for folder in self.sessions():
                if folder.name in self._active or now - folder.stat().st_mtime <= self.max_idle_s:
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def sessions(self) -> list[Path]:
        """The session folders (other folders under the root are left alone)."""
        if not self.root.exists():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and _SESSION_DIR.fullmatch(p.name))

    def close(self) -> None:
        """Remove every session's files (and the root, if this object made it)."""
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for folder in self.sessions():
                shutil.rmtree(folder, ignore_errors=True)
