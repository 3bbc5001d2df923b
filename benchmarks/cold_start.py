"""Cold start: from a checkpoint on disk to a model ready to run, in fresh processes.

A checkpoint of random weights is written once with ``mpgsam2.save_pretrained`` (``model.safetensors``) and,
beside it, as ``pytorch_model.bin`` (``torch.save`` of the same official-named state dict) and as a bfloat16
safetensors copy. Each way of loading then runs in its own child process, which reports the wall time of
its steps (import, read, build, load), its peak resident memory and a checksum of the loaded weights:

* ``library-safetensors``: ``mpgsam2.load_model(folder)``, the library's path today (safetensors read into
  memory, model built with PyTorch's default initialisation, weights copied in);
* ``library-bin``: ``mpgsam2.load_model(folder / "pytorch_model.bin")`` (``torch.load`` with ``mmap=True``);
* ``mmap-assign``: what the library could do: the safetensors file memory-mapped copy-on-write and wrapped
  without copying (``torch.frombuffer``), the model built without running its initialisers, and the
  tensors assigned as the parameters (``load_state_dict(assign=True)``); pages are read when first used;
* ``mmap-assign-bf16``: the same from the bfloat16 copy (half the bytes on disk and to download), cast to
  float32 on load; the weights are rounded, so outputs change (not parity-preserving).

The page cache is warm (the files were just written or read); a first download or a cold disk adds its
read time to every variant alike. Usage::

    python benchmarks/cold_start.py --preset test --json /tmp/cold_test.json
    python benchmarks/cold_start.py --preset large --json /tmp/cold_large.json   # ~8 GB of files in --dir
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = ("library-safetensors", "library-bin", "mmap-assign", "mmap-assign-bf16")
SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32"}


def mmap_safetensors(path: Path) -> dict:
    """Tensors of a safetensors file as zero-copy views of a private (copy-on-write) memory map."""
    import torch

    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
    base = 8 + header_size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = getattr(torch, SAFETENSORS_DTYPES[info["dtype"]])
        start, end = info["data_offsets"]
        count = (end - start) // torch.empty((), dtype=dtype).element_size()
        flat = torch.frombuffer(mapped, dtype=dtype, count=count, offset=base + start) if count else None
        tensors[name] = flat.reshape(info["shape"]) if count else torch.empty(info["shape"], dtype=dtype)
    return tensors


@contextlib.contextmanager
def initialisers_skipped():
    """Construct modules without running ``torch.nn.init`` functions (their values are replaced anyway)."""
    import torch

    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def _peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(spec: dict) -> None:
    times: dict[str, float] = {}
    started = time.perf_counter()
    import torch

    torch.set_num_threads(spec["threads"])
    from mpgsam2.checkpoints import config_from_state_dict, from_official, load_model
    from mpgsam2.modeling.model import MPGSAM2

    times["import_s"] = time.perf_counter() - started
    folder = Path(spec["folder"])
    variant = spec["variant"]
    mark = time.perf_counter()
    if variant == "library-safetensors":
        model = load_model(folder, device="cpu")
    elif variant == "library-bin":
        model = load_model(folder / "pytorch_model.bin", device="cpu")
    else:
        source = (folder if variant == "mmap-assign" else folder / "bf16") / "model.safetensors"
        state = mmap_safetensors(source)
        times["read_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        hints = json.loads((folder / "config.json").read_text()).get("mpgsam2", {})
        with initialisers_skipped():
            model = MPGSAM2(config_from_state_dict(state, hints))
        times["build_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        state = from_official(state)
        if variant == "mmap-assign-bf16":
            state = {name: t.float() if t.is_floating_point() else t for name, t in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        model.eval()
    times["load_s"] = time.perf_counter() - mark
    times["ready_s"] = time.perf_counter() - started
    ready_peak = _peak_mib()
    with torch.no_grad():
        checksum = float(
            sum(p.double().abs().sum() for p in model.state_dict().values() if p.is_floating_point())
        )
    first_frame = None
    if spec["first_frame"]:
        import numpy as np

        from mpgsam2 import VideoPredictor, load_tokenizer

        tokenizer = load_tokenizer(ROOT / "mpgsam2" / "assets" / "test_tokenizer.model")
        frame = np.full((1, 120, 160, 3), 128, np.uint8)
        mark = time.perf_counter()
        VideoPredictor(model, tokenizer).segment(frame, ["a thing"])
        first_frame = time.perf_counter() - mark
    result = dict(times, ready_peak_mib=ready_peak, checksum=checksum, first_frame_s=first_frame)
    Path(spec["result"]).write_text(json.dumps(result))


def prepare(folder: Path, preset: str) -> dict:
    """Write the checkpoint in the three formats (once); returns the file sizes in MiB."""
    import torch

    from mpgsam2 import build_model, save_pretrained
    from mpgsam2.checkpoints import official_state_dict

    if not (folder / "bf16" / "model.safetensors").is_file():
        model = build_model(preset, seed=0)
        save_pretrained(model, folder)
        state = official_state_dict(model)
        torch.save({k: v.contiguous() for k, v in state.items()}, folder / "pytorch_model.bin")
        half = model.to(torch.bfloat16)
        save_pretrained(half, folder / "bf16")
        del model, half, state
    return {
        "safetensors_mib": (folder / "model.safetensors").stat().st_size / 2**20,
        "bin_mib": (folder / "pytorch_model.bin").stat().st_size / 2**20,
        "bf16_safetensors_mib": (folder / "bf16" / "model.safetensors").stat().st_size / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="test")
    parser.add_argument("--dir", type=Path, help="where the checkpoints go (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--first-frame", action="store_true", help="also time the first 1-frame segment")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0

    with contextlib.ExitStack() as stack:
        folder = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mpgsam2-cold-")))
        folder = folder / args.preset
        sizes = prepare(folder, args.preset)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        samples: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for repeat in range(args.repeats):
            for variant in VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]:
                spec = {"variant": variant, "folder": str(folder), "threads": args.threads}
                spec |= {"first_frame": args.first_frame, "result": str(folder / f"{variant}-{repeat}.json")}
                command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
                samples[variant].append(json.loads(Path(spec["result"]).read_text()))
    rows = []
    reference = samples["library-safetensors"][0]["checksum"]
    print(f"preset {args.preset}: files {json.dumps({k: round(v) for k, v in sizes.items()})} MiB")
    print(
        f"{'variant':>22} {'ready s':>7} {'import':>7} {'read':>7} {'build':>7} {'load':>7} {'peak MiB':>9}  same"
    )
    for variant, runs in samples.items():
        row = {"preset": args.preset, "variant": variant, "repeats": args.repeats, **sizes}
        for key in ("ready_s", "import_s", "read_s", "build_s", "load_s", "ready_peak_mib", "first_frame_s"):
            values = [r[key] for r in runs if r.get(key) is not None]
            row[key] = statistics.median(values) if values else None
        row["same_weights"] = all(abs(r["checksum"] - reference) <= 1e-9 * abs(reference) for r in runs)
        rows.append(row)
        cells = [row[k] for k in ("ready_s", "import_s", "read_s", "build_s", "load_s")]
        timings = " ".join(f"{'-':>7}" if c is None else f"{c:7.2f}" for c in cells)
        print(f"{variant:>22} {timings} {row['ready_peak_mib']:9.0f}  {row['same_weights']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
