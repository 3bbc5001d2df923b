"""Device and precision, chosen once: cuda, then mps, then cpu; autocast and TF32 only as scoped contexts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

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
    """'fp32'/'float32' (and 'tf32', fp32 with TF32 products), 'bf16'/'bfloat16', 'fp16'/'float16' -> torch
    dtype (None stays None)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    table = {
        "tf32": torch.float32,
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
        raise ValueError(f"Unknown precision {name!r}; use fp32, tf32, bf16 or fp16.") from None


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """fp32 matrix products and convolutions on CUDA in TF32 (Ampere and later: faster, with a relative error
    near 1e-3) or in full fp32, for the scope only. PyTorch's own defaults differ between the two (matrix
    products in fp32, convolutions in TF32); the official model's numbers are full fp32."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def supports_dtype(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``device`` computes in ``dtype`` (bfloat16 needs Ampere on CUDA, macOS 14 on MPS)."""
    if device.type == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    if device.type == "mps":
        try:
            torch.zeros(1, dtype=dtype, device=device) + 1
        except (RuntimeError, TypeError):
            return False
    return True
