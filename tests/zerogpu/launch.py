"""Run an app as a ZeroGPU Space runs it, on a machine without a GPU:

    ZEROGPU_DEVICE_API=http://127.0.0.1:PORT python tests/zerogpu/launch.py app.py [app arguments...]

with a device API listening there (``device_api.py``). The ``spaces`` package's own ZeroGPU code runs: its
torch patching in the main process (tensors moved to "cuda" become fake CUDA tensors, ``torch.cuda`` says a
GPU is there), the packing of those tensors to disk when the app launches, and each ``@spaces.GPU`` call in a
forked worker (reused while idle) with its arguments, every yielded value and exceptions pickled across the
process boundary, the duration, and the abort when the worker dies. Three steps need a real GPU and are
replaced here:

* selecting the GPU and creating a first CUDA tensor in the worker: nothing is done;
* undoing the patching in the worker (where "cuda" is real again): it is kept, so "cuda" stays emulated;
* moving the packed tensors to the GPU: they are read back from the pack file into memory.

The worker's task threads also enter the patched torch mode, which the main thread has (it is per thread).

On a machine with a GPU, ``ZEROGPU_REAL_GPU=1`` keeps those three steps as they are: start the app with
``CUDA_VISIBLE_DEVICES=""`` and let the device API hand out the GPU's UUID (``nvidia-smi -L``); workers then
select the GPU and move the packed tensors to it, as on a Space.

Environment: ``ZEROGPU_DEVICE_API`` (required), ``ZEROGPU_HOME`` (a folder for the offload pack, on a disk
that accepts direct I/O: not a tmpfs; default: a temporary folder), ``ZEROGPU_REAL_GPU``.
"""

from __future__ import annotations

import concurrent.futures
import os
import runpy
import sys
import tempfile
from pathlib import Path


def _configure() -> None:
    home = Path(os.environ.get("ZEROGPU_HOME") or tempfile.mkdtemp(prefix="zerogpu-"))
    home.mkdir(parents=True, exist_ok=True)
    cgroup = home / "cgroup"
    cgroup.write_text("0::/zerogpu-on-cpu.slice\n")
    os.environ.update(
        {
            "SPACES_ZERO_GPU": "true",
            "SPACES_ZERO_DEVICE_API_URL": os.environ["ZEROGPU_DEVICE_API"],
            "ZEROGPU_OFFLOAD_DIR": str(home / "offload"),
            "ZEROGPU_PROC_SELF_CGROUP_PATH": str(cgroup),
            # Packing removes memory-mapped model files it finds under this pattern; point it at nothing.
            "ZEROGPU_MMAP_AUTOPRUNE_PATTERN": str(home / "nothing" / "*"),
        }
    )


def _replace_gpu_steps() -> None:
    import spaces  # noqa: F401  (patches torch; this thread enters the patched mode)
    import spaces.zero.torch as zero_torch
    import spaces.zero.wrappers as wrappers
    import torch
    from spaces.zero.torch import patching

    def restore_packs(callback=None) -> None:
        """Pack file -> memory: each tensor was written page-aligned, batches first, then big tensors."""
        for pack in patching.tensor_packs:
            entries = [entry for batch in pack.batches for entry in batch] + list(pack.big_tensors)
            with open(pack.path(), "rb") as handle:
                for meta, size, aligned_size in entries:
                    data = bytearray(handle.read(aligned_size))[:size]
                    if size:
                        storage = torch.frombuffer(data, dtype=torch.uint8).untyped_storage()
                    else:
                        storage = torch.UntypedStorage(0)
                    tensor = torch.empty(0, dtype=meta.dtype).set_(storage, 0, meta.shape, meta.stride())
                    for fake in pack.fakes[meta]:
                        patching.cuda_aliases[fake] = tensor

    zero_torch.init = lambda nvidia_uuid: None
    zero_torch.unpatch = lambda: None
    zero_torch.move = restore_packs

    class PatchedThreads(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, max_workers=None, *args, **kwargs):
            kwargs.setdefault("initializer", patching.enter_mode)
            super().__init__(max_workers, *args, **kwargs)

    wrappers.ThreadPoolExecutor = PatchedThreads


if __name__ == "__main__":
    _configure()
    if os.environ.get("ZEROGPU_REAL_GPU") == "1":
        import spaces  # noqa: F401  (before the app and torch, as on a Space)
    else:
        _replace_gpu_steps()
    app = Path(sys.argv[1]).resolve()
    sys.argv = [str(app), *sys.argv[2:]]
    sys.path.insert(0, str(app.parent))
    runpy.run_path(str(app), run_name="__main__")
