"""Stage timing and peak-memory probes for benchmarks and diagnostics (no effect unless used).

:class:`StageTimer` charges wall time to named stages. Stages may nest; time is *exclusive*, i.e. charged to
the innermost open stage only, so the stages of one run add up to the time they cover. Stages can be opened
explicitly (``with timer.stage("hiera"): ...``), around a module's forward (:meth:`StageTimer.hook`) or
around any attribute that is a callable (:meth:`StageTimer.wrap`), which times library code without
editing it. Process CPU time (all threads) is kept per stage beside wall time: on a machine shared with
other work it is the steadier of the two for single-threaded runs. On CUDA the device is synchronised at
stage boundaries so that the time lands where the work is.

:class:`PeakMemory` reads the process's peak resident set size (Linux ``/proc/self/status``) and the CUDA
allocator's peak, and can reset both, so that one process can measure the peak of one stretch of work.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class StageTimer:
    """Exclusive wall time per named stage."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)  # process CPU time, all threads
        self.calls: dict[str, int] = defaultdict(int)
        self._open: list[list] = []  # [name, wall and CPU time when the stage last started running]

    def _now(self) -> tuple[float, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter(), time.process_time()

    def _charge(self, entry: list, now: tuple[float, float]) -> None:
        self.seconds[entry[0]] += now[0] - entry[1]
        self.cpu_seconds[entry[0]] += now[1] - entry[2]

    def start(self, name: str) -> None:
        now = self._now()
        if self._open:
            self._charge(self._open[-1], now)
        self._open.append([name, *now])
        self.calls[name] += 1

    def stop(self) -> None:
        now = self._now()
        self._charge(self._open.pop(), now)
        if self._open:
            self._open[-1][1:] = now

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop()

    @contextlib.contextmanager
    def wrap(self, owner: object, attribute: str, name: str) -> Iterator[None]:
        """Time every call of ``owner.attribute`` as stage ``name`` while the context is open."""
        original = getattr(owner, attribute)
        patched_instance = attribute in getattr(owner, "__dict__", {})

        def timed(*args, **kwargs):
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)
        try:
            yield
        finally:
            if patched_instance or not hasattr(type(owner), attribute):
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)  # the class's method shows through again

    @contextlib.contextmanager
    def hook(self, module: nn.Module, name: str) -> Iterator[None]:
        """Time every forward of ``module`` as stage ``name`` while the context is open."""
        handles = [
            module.register_forward_pre_hook(lambda *_: self.start(name)),
            module.register_forward_hook(lambda *_: self.stop()),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def total(self) -> float:
        return sum(self.seconds.values())

    def as_dict(self) -> dict[str, float]:
        return dict(self.seconds)

    def cpu_dict(self) -> dict[str, float]:
        return dict(self.cpu_seconds)


def _status_mib(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident memory of this process (and of the CUDA allocator) over stretches of work.

    ``reset()`` starts a stretch; ``peak_mib()`` is the highest resident set size since. Where the kernel
    does not allow resetting the high-water mark (non-Linux systems), the peak is the process's lifetime
    peak (``resource.getrusage``), which only ever grows: use one process per measurement there.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.resettable = _CLEAR_REFS.exists() and _status_mib("VmHWM") is not None

    def rss_mib(self) -> float:
        current = _status_mib("VmRSS")
        return current if current is not None else self._lifetime_peak_mib()

    @staticmethod
    def _lifetime_peak_mib() -> float:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024

    def reset(self) -> None:
        if self.resettable:
            try:
                _CLEAR_REFS.write_text("5")  # "5": reset the peak RSS to the current RSS (Linux >= 4.0)
            except OSError:
                logger.warning("Cannot reset the peak RSS; peaks are lifetime peaks from now on.")
                self.resettable = False
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float:
        peak = _status_mib("VmHWM") if self.resettable else None
        return peak if peak is not None else self._lifetime_peak_mib()

    def cuda_allocated_mib(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.memory_allocated(self.device) / 2**20

    def cuda_peak_mib(self) -> float | None:
        if self.device.type != "cuda":
            return None
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) / 2**20
