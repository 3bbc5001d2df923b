"""A stand-in for ZeroGPU's device API, on loopback, for running an app through the ``spaces`` package's real
ZeroGPU code path on a machine without a GPU (see ``launch.py``).

The ``spaces`` package asks this API for a GPU before each ``@spaces.GPU`` call (``/schedule``), tells it
which forked worker process runs the call (``/allow``) and gives the GPU back (``/release``). Like the real
service, it kills a worker that runs past the duration it was scheduled for; ``/control`` makes it kill
workers sooner, or refuse to reuse them. Every call is logged, so a test can see which process ran what and
how long each call held the GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

#: What the API hands out as the GPU's id (a real one's, on a machine with one GPU).
DEFAULT_UUID = "GPU-00000000-0000-0000-0000-000000000000"


@dataclass
class _Grant:
    """One scheduled call: its duration, and the kill armed once a worker runs it."""

    duration_s: float
    timer: threading.Timer | None = None
    released: bool = False


@dataclass
class DeviceAPI:
    """The API's state; :meth:`serve` answers HTTP on ``127.0.0.1:port`` (0: any free port)."""

    gpu_uuid: str = DEFAULT_UUID
    log: list[dict] = field(default_factory=list)
    kill_after_s: float | None = None  # kill workers this long after /allow (None: at the duration)
    reuse_workers: bool = True
    _grants: dict[str, _Grant] = field(default_factory=dict)
    _worker: int | None = None  # the pid of the idle worker the next call may reuse
    _busy: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _arm(self, token: str, pid: int) -> None:
        grant = self._grants[token]
        delay = grant.duration_s if self.kill_after_s is None else self.kill_after_s
        grant.timer = threading.Timer(delay, self._kill, (token, pid))
        grant.timer.daemon = True
        grant.timer.start()

    def _kill(self, token: str, pid: int) -> None:
        with self._lock:
            if self._grants[token].released:
                return
            self.log.append({"t": time.time(), "event": "kill", "pid": pid, "token": token})
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def handle(self, path: str, query: dict[str, str]) -> tuple[int, object]:
        """One POST: (HTTP status, JSON body)."""
        with self._lock:
            self.log.append({"t": time.time(), "event": path, **query})
            if path == "startup-report":
                return 200, None
            if path == "control":
                if "kill_after" in query:
                    self.kill_after_s = None if query["kill_after"] == "none" else float(query["kill_after"])
                if "reuse" in query:
                    self.reuse_workers = query["reuse"] not in ("0", "false")
                return 200, {"kill_after": self.kill_after_s, "reuse": self.reuse_workers}
            if path == "schedule":
                token = uuid.uuid4().hex
                idle = self.reuse_workers and self._busy == 0 and self._worker is not None
                self._busy += 1
                self._grants[token] = _Grant(float(query.get("durationSeconds", 60)))
                if idle:  # the idle worker takes the call without an /allow
                    self._arm(token, self._worker)
                body = {"idle": idle, "nvidiaIndex": 0, "nvidiaUUID": self.gpu_uuid, "allowToken": token}
                return 200, body
            if path == "allow":
                token, pid = query["allowToken"], int(query["pid"])
                self._worker = pid
                if token in self._grants and self._grants[token].timer is None:
                    self._arm(token, pid)
                return 200, None
            if path == "release":
                grant = self._grants.get(query["allowToken"])
                if grant is None:
                    return 404, None
                grant.released = True
                if grant.timer is not None:
                    grant.timer.cancel()
                self._busy = max(0, self._busy - 1)
                if query.get("fail") in ("true", "True", "1"):
                    self._worker = None  # a failed call's worker is not used again
                return 200, None
            return 404, None

    def events(self, kind: str) -> list[dict]:
        with self._lock:
            return [entry for entry in self.log if entry["event"] == kind]

    def held_seconds(self) -> list[float]:
        """Per call, in order: seconds from /schedule to /release (how long it held a GPU)."""
        with self._lock:
            scheduled = [e["t"] for e in self.log if e["event"] == "schedule"]
            released = [e["t"] for e in self.log if e["event"] == "release"]
        return [end - start for start, end in zip(scheduled, released)]

    def serve(self, port: int = 0) -> ThreadingHTTPServer:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _reply(self, status: int, body: object) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if urlparse(self.path).path == "/log":
                    with api._lock:
                        self._reply(200, list(api.log))
                else:
                    self._reply(404, None)

            def do_POST(self) -> None:
                url = urlparse(self.path)
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                self._reply(*api.handle(url.path.strip("/"), query))

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def direct_io_folder(base: Path) -> Path:
    """A new folder on a disk that accepts direct I/O, which ZeroGPU's packing needs (a tmpfs does not)."""
    for candidate in (base, Path(tempfile.gettempdir()), Path("/var/tmp")):
        try:
            folder = Path(tempfile.mkdtemp(prefix="zerogpu-", dir=candidate))
            fd = os.open(folder / "probe", os.O_CREAT | os.O_WRONLY | os.O_DIRECT)
            os.close(fd)
            return folder
        except OSError:
            continue
    raise RuntimeError("no folder accepts direct I/O (O_DIRECT) here; ZeroGPU's packing needs one")
