"""Device and precision, chosen once: cuda, then mps, then cpu; autocast only as a scoped context."""

from __future__ import annotations

import contextlib
import logging

import torch

logger = logging.getLogger(__name__)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, or the best available one (cuda, then mps, then cpu)."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """A mixed-precision scope for ``dtype`` (bf16/fp16) on ``device``; a no-op for fp32 or None."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("float16 autocast is not supported on the CPU; use bfloat16 or float32.")
    return torch.autocast(device_type=device.type, dtype=dtype)


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """'fp32'/'float32', 'bf16'/'bfloat16', 'fp16'/'float16' -> torch dtype (None stays None)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    try:
        return table[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown precision {name!r}; use fp32, bf16 or fp16.") from None
