"""Time and peak memory of our pipeline against the official algorithm, same weights, same inputs.

Two kinds of rows, each measured in fresh child processes (one per variant and repeat, baseline and ours
interleaved, so that peaks are clean and load from other work hits both sides alike):

* ``pipeline``: the whole run, T frames x K expressions, uint8 frames in, per-frame logits out. The
  baseline (``official_baseline.run_official``) does everything once per expression; ours is
  ``VideoPredictor.iter_segment``. Both write every expression's logits to a file, and the parent checks
  that the two give the same masks.
* ``global``: only the clip-level stage for one expression (the preprocessing it needs, BEiT-3 and the
  mask prior generator), to show how its peak memory grows with T. Where the baseline's attention matrix
  cannot fit in this machine's memory, the row says so and gives that matrix's size instead.

Seconds are wall time (medians over ``--repeats``), split into stages: decode (frames to model inputs),
beit3, prior (mask prior generator, patch merge), hiera (SAM 2's image encoder), memory_decoder (memory
attention, prompts, aggregator, mask decoder), encode (SAM 2's memory encoder), post (resizing the masks),
other. Memory is the peak resident set size during the run (weights and input frames included; model
building excluded) and, as ``working``, that peak minus the resident size when the run started. On CUDA
the allocator's peak is recorded too.

Usage::

    python benchmarks/pipeline.py --preset test --json benchmarks/results/test.json
    python benchmarks/pipeline.py --preset large --json benchmarks/results/large.json   # tens of minutes
    python benchmarks/pipeline.py --preset test --frames 2 --expressions 1 --json /tmp/tiny.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

STAGES = ("decode", "beit3", "prior", "hiera", "memory_decoder", "encode", "post", "other")
VARIANTS = ("baseline", "ours")
EXPRESSIONS = ("the dog on the left", "a person riding a red bike", "the white car in front of the house")
GRIDS = {
    # pipeline: frames x expressions; global: frames (one expression)
    "test": {"frames": (8,), "expressions": (1, 3), "global_frames": (8, 32, 128)},
    "base": {"frames": (4, 16), "expressions": (1, 3), "global_frames": (4, 16)},
    "large": {"frames": (4, 16), "expressions": (1, 3), "global_frames": (4, 16)},
}
TOKENIZER = ROOT / "mpgsam2" / "assets" / "test_tokenizer.model"
# The baseline's prior attention may use at most this share of the memory available when it starts.
MEMORY_SAFETY = 0.7
# Masks "match" when the pixels where they differ have |logit| below this (float rounding at the threshold)
# and all logits agree within the parity test's tolerance.
MASK_MARGIN = 1e-3
LOGIT_TOLERANCE = 1e-2


# ----------------------------------------------------------------------------------------------- inputs


def synthetic_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a colour gradient with three shapes moving across it, plus sensor noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    base = np.stack(
        [60 + 120 * cols + 0 * rows, 80 + 100 * rows + 0 * cols, 140 - 60 * cols * rows], axis=-1
    ).astype(np.uint8)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    shapes = [((220, 40, 40), 0.2, 0.3, 0.012, 0.004), ((40, 200, 60), 0.6, 0.6, -0.008, 0.006)]
    shapes.append(((240, 240, 240), 0.4, 0.75, 0.005, -0.01))
    for t in range(num_frames):
        frame = base.copy()
        for colour, y, x, vy, vx in shapes:
            cy, cx = int((y + vy * t) % 1 * height), int((x + vx * t) % 1 * width)
            half_h, half_w = height // 8, width // 10
            frame[max(cy - half_h, 0) : cy + half_h, max(cx - half_w, 0) : cx + half_w] = colour
        noise = rng.integers(0, 12, (height, width, 1), dtype=np.uint8)
        frames[t] = np.minimum(frame.astype(np.uint16) + noise, 255).astype(np.uint8)
    return frames


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    return f"{cpu}, {os.cpu_count()} logical CPUs{memory}, {platform.system()} {platform.release()}"


def software_versions() -> str:
    from importlib import metadata

    versions = [f"python {platform.python_version()}"]
    for package in ("torch", "sam2", "numpy", "pillow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    return ", ".join(versions)


def available_memory_bytes() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


# ------------------------------------------------------------------------------------------------ child


def _run_ours(model, tokenizer, frames, texts, mode, timer, out_dir, precision):
    import mpgsam2.inference.predictor as predictor_module
    from mpgsam2 import VideoPredictor

    with contextlib.ExitStack() as stack:
        stack.enter_context(timer.wrap(predictor_module, "resize", "decode"))
        stack.enter_context(timer.hook(model.multimodal_encoder, "beit3"))
        stack.enter_context(timer.hook(model.mask_prior, "prior"))
        stack.enter_context(timer.wrap(model, "merge_mask_embeddings", "prior"))
        stack.enter_context(timer.wrap(model, "encode_frame", "hiera"))
        stack.enter_context(timer.wrap(model, "track_frame", "memory_decoder"))
        stack.enter_context(timer.wrap(model.sam2, "_encode_new_memory", "encode"))
        # Made inside the wraps: the predictor keeps the (wrapped) image encoder it is given.
        predictor = VideoPredictor(model, tokenizer, precision=precision)
        stack.enter_context(timer.wrap(predictor, "launch", "post"))
        if mode == "global":
            with timer.stage("other"):
                session = predictor.init_session(frames, texts)
            del session
            return
        files = [open(out_dir / f"ours_{k}.f32", "wb") for k in range(len(texts))]  # noqa: SIM115
        with timer.stage("other"):
            for result in predictor.iter_segment(frames, texts, logits=True):
                with timer.stage("io"):
                    for k, handle in enumerate(files):
                        handle.write(np.ascontiguousarray(result.logits[k], np.float32).tobytes())
        for handle in files:
            handle.close()


def _run_baseline(model, tokenizer, frames, texts, mode, timer, out_dir):
    from official_baseline import run_official

    encoded = [tokenizer.encode(text) for text in texts]
    with timer.stage("other"):
        for k, result in enumerate(run_official(model, frames, encoded, timer, global_only=mode == "global")):
            if mode == "pipeline":
                with timer.stage("io"):
                    result.logits.astype(np.float32).tofile(out_dir / f"baseline_{k}.f32")
            del result


def child_main(spec: dict) -> None:
    """One measurement in this (fresh) process; writes its result as JSON to ``spec["result"]``."""
    import torch

    torch.set_num_threads(spec["threads"])
    from mpgsam2 import build_model, load_tokenizer
    from mpgsam2.profiling import PeakMemory, StageTimer

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = build_model(spec["preset"], seed=spec["seed"]).to(device)
    tokenizer = load_tokenizer(TOKENIZER)
    tokenizer.max_tokens = min(tokenizer.max_tokens, model.config.beit3.max_text_tokens)
    frames = synthetic_frames(spec["frames"], spec["height"], spec["width"], spec["seed"])
    texts = list(EXPRESSIONS[: spec["expressions"]])
    out_dir = Path(spec["out_dir"])
    gc.collect()

    memory = PeakMemory(device)
    timer = StageTimer(device)
    start_rss = memory.rss_mib()
    start_cuda = memory.cuda_allocated_mib()
    memory.reset()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if spec["variant"] == "ours":
        _run_ours(model, tokenizer, frames, texts, spec["mode"], timer, out_dir, spec["precision"])
    else:
        _run_baseline(model, tokenizer, frames, texts, spec["mode"], timer, out_dir)
    wall = time.perf_counter() - started
    finished = resource.getrusage(resource.RUSAGE_SELF)
    peak = memory.peak_mib()
    stages, cpu_stages = timer.as_dict(), timer.cpu_dict()
    io_seconds = stages.pop("io", 0.0)
    io_cpu_seconds = cpu_stages.pop("io", 0.0)
    result = {
        "seconds": wall - io_seconds,
        "cpu_seconds": (finished.ru_utime + finished.ru_stime)
        - (usage.ru_utime + usage.ru_stime)
        - io_cpu_seconds,
        "stages": {name: stages.get(name, 0.0) for name in STAGES},
        "cpu_stages": {name: cpu_stages.get(name, 0.0) for name in STAGES},
        "io_seconds": io_seconds,
        "start_rss_mib": start_rss,
        "peak_mib": peak,
        "working_mib": peak - start_rss,
        "peak_resettable": memory.resettable,
        "cuda_peak_mib": memory.cuda_peak_mib(),
        "cuda_start_mib": start_cuda,
        "frame_shape": list(frames.shape),
    }
    Path(spec["result"]).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------- parent


def run_child(spec: dict, timeout: float | None) -> dict:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(spec["threads"])
    if spec.get("omp_wait_policy"):
        env["OMP_WAIT_POLICY"] = spec["omp_wait_policy"]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(
            f"{spec['variant']} ({spec['mode']}, T={spec['frames']}, K={spec['expressions']}) failed "
            f"with exit code {completed.returncode}:\n{completed.stderr[-4000:]}"
        )
    return json.loads(Path(spec["result"]).read_text())


def compare_outputs(out_dir: Path, num_expressions: int, shape: list[int]) -> dict:
    """Masks (logit > 0) and logits of the baseline against ours, over every expression and frame.

    The two sides compute the same thing through different attention kernels (materialised softmax against
    fused ones), so logits differ by float rounding, and a pixel whose logit is that close to 0 can land on
    either side of the threshold. ``masks_match`` holds when every differing pixel is such a pixel (both
    logits within ``MASK_MARGIN`` of 0) and the logits agree within the parity test's tolerance.
    """
    mismatched, total, max_diff, foreground, worst_margin = 0, 0, 0.0, 0, 0.0
    num_frames, height, width = shape[:3]
    for k in range(num_expressions):
        baseline = np.fromfile(out_dir / f"baseline_{k}.f32", np.float32).reshape(num_frames, height, width)
        ours = np.fromfile(out_dir / f"ours_{k}.f32", np.float32).reshape(num_frames, height, width)
        differ = (baseline > 0) != (ours > 0)
        mismatched += int(differ.sum())
        if differ.any():
            margin = np.maximum(np.abs(baseline[differ]), np.abs(ours[differ])).max()
            worst_margin = max(worst_margin, float(margin))
        foreground += int((ours > 0).sum())
        total += ours.size
        max_diff = max(max_diff, float(np.abs(baseline - ours).max()))
    return {
        "masks_equal": mismatched == 0,
        "masks_match": worst_margin <= MASK_MARGIN and max_diff <= LOGIT_TOLERANCE,
        "mask_mismatch_fraction": mismatched / total,
        "mismatch_max_abs_logit": worst_margin,
        "max_abs_logit_diff": max_diff,
        "mask_foreground_fraction": foreground / total,
    }


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(samples: dict[str, list[dict]]) -> dict:
    row: dict = {}
    for variant in VARIANTS:
        runs = samples.get(variant, [])
        row[f"{variant}_s"] = median([r["seconds"] for r in runs])
        row[f"{variant}_min_s"] = min([r["seconds"] for r in runs], default=None)
        row[f"{variant}_cpu_s"] = median([r["cpu_seconds"] for r in runs])
        row[f"{variant}_peak_mib"] = median([r["peak_mib"] for r in runs])
        row[f"{variant}_working_mib"] = median([r["working_mib"] for r in runs])
        row[f"{variant}_cuda_peak_mib"] = median([r["cuda_peak_mib"] for r in runs])
        row[f"{variant}_samples_s"] = [round(r["seconds"], 3) for r in runs]
        for stage in STAGES:
            row[f"{variant}_{stage}_s"] = median([r["stages"][stage] for r in runs])
        row[f"{variant}_cpu_stages_s"] = {
            stage: median([r["cpu_stages"][stage] for r in runs]) for stage in STAGES
        }
    if row["baseline_s"] and row["ours_s"]:
        row["speedup"] = row["baseline_s"] / row["ours_s"]
        row["cpu_speedup"] = row["baseline_cpu_s"] / row["ours_cpu_s"]
    if row["baseline_peak_mib"] and row["ours_peak_mib"]:
        row["peak_ratio"] = row["ours_peak_mib"] / row["baseline_peak_mib"]
        row["working_ratio"] = row["ours_working_mib"] / row["baseline_working_mib"]
    return row


def measure(args, kind: str, num_frames: int, num_expressions: int, work: Path) -> dict:
    base_spec = {
        "preset": args.preset,
        "seed": args.seed,
        "device": args.device,
        "threads": args.threads,
        "height": args.height,
        "width": args.width,
        "precision": args.precision,
        "omp_wait_policy": args.omp_wait_policy,
        "mode": kind,
        "frames": num_frames,
        "expressions": num_expressions,
    }
    row: dict = {"kind": kind, "preset": args.preset, "frames": num_frames, "expressions": num_expressions}
    variants = list(VARIANTS)
    if kind == "global":
        from official_baseline import attention_matrix_bytes

        needed = attention_matrix_bytes(num_frames, heads=args.prior_heads)
        row["baseline_attention_mib"] = needed / 2**20
        available = available_memory_bytes()
        if available is not None and needed > MEMORY_SAFETY * available:
            variants = ["ours"]
            row["baseline_skipped"] = (
                f"the official prior attention needs >= {needed / 2**30:.1f} GiB (8 x {196 * num_frames}^2 "
                f"float32 scores and their softmax); {available / 2**30:.1f} GiB available"
            )
    samples: dict[str, list[dict]] = {v: [] for v in variants}
    out_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-T{num_frames}-K{num_expressions}-", dir=work))
    for repeat in range(args.repeats):
        order = variants if repeat % 2 == 0 else variants[::-1]
        for variant in order:
            spec = dict(base_spec, variant=variant, out_dir=str(out_dir))
            spec["result"] = str(out_dir / f"{variant}-{repeat}.json")
            samples[variant].append(run_child(spec, args.timeout))
        if repeat == 0 and kind == "pipeline":
            row.update(compare_outputs(out_dir, num_expressions, samples["ours"][0]["frame_shape"]))
            for path in out_dir.glob("*.f32"):
                path.unlink()
    row.update(summarise(samples))
    row["repeats"] = args.repeats
    row["threads"] = args.threads
    row["omp_wait_policy"] = args.omp_wait_policy
    row["device"] = args.device
    row["frame_size"] = [args.height, args.width]
    row["peak_resettable"] = all(r["peak_resettable"] for runs in samples.values() for r in runs)
    return row


def mask_verdict(row: dict) -> str:
    if row.get("masks_equal"):
        return "equal"
    if row.get("masks_match"):
        return f"~{row['mask_mismatch_fraction']:.0e}"
    return "DIFFER"


def add_expression_costs(rows: list[dict]) -> None:
    """On K > 1 rows: what each expression beyond the first costs, as a fraction of the K = 1 run."""
    single = {(r["kind"], r["frames"]): r for r in rows if r["expressions"] == 1}
    for row in rows:
        first = single.get((row["kind"], row["frames"]))
        if first is None or row["expressions"] == 1:
            continue
        for variant in VARIANTS:
            one, many = first[f"{variant}_s"], row[f"{variant}_s"]
            if one and many:
                row[f"{variant}_extra_expression_fraction"] = (many - one) / ((row["expressions"] - 1) * one)


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def print_tables(rows: list[dict]) -> None:
    pipeline = [r for r in rows if r["kind"] == "pipeline"]
    if pipeline:
        print(
            "\nWhole pipeline (wall seconds, medians; cpu: the speed-up in process CPU seconds; "
            "peak RSS MiB during the run, weights included)"
        )
        header = f"{'T':>4} {'K':>2} | {'base s':>8} {'ours s':>8} {'speedup':>7} {'cpu':>6} | "
        header += f"{'base MiB':>9} {'ours MiB':>9} {'ratio':>6} | {'masks':>6}"
        print(header)
        print("-" * len(header))
        for r in pipeline:
            same = mask_verdict(r)
            print(
                f"{r['frames']:>4} {r['expressions']:>2} | {_fmt(r['baseline_s']):>8} {_fmt(r['ours_s']):>8} "
                f"{_fmt(r.get('speedup'), 2, 'x'):>7} {_fmt(r.get('cpu_speedup'), 2, 'x'):>6} | "
                f"{_fmt(r['baseline_peak_mib'], 0):>9} "
                f"{_fmt(r['ours_peak_mib'], 0):>9} {_fmt(r.get('peak_ratio')):>6} | {same:>6}"
            )
        print("\nStages (wall seconds, baseline / ours)")
        header = f"{'T':>4} {'K':>2} | " + " ".join(f"{s:>15}" for s in STAGES)
        print(header)
        print("-" * len(header))
        for r in pipeline:
            cells = [f"{_fmt(r[f'baseline_{s}_s'])}/{_fmt(r[f'ours_{s}_s'])}" for s in STAGES]
            print(f"{r['frames']:>4} {r['expressions']:>2} | " + " ".join(f"{c:>15}" for c in cells))
    global_rows = [r for r in rows if r["kind"] == "global"]
    if global_rows:
        print("\nGlobal stage, one expression (decode + BEiT-3 + prior): working memory above the start, MiB")
        header = f"{'T':>4} | {'base s':>8} {'ours s':>8} | {'base MiB':>9} {'ours MiB':>9} {'ratio':>6}"
        print(header)
        print("-" * len(header))
        for r in global_rows:
            base_mib = _fmt(r["baseline_working_mib"], 0)
            if "baseline_skipped" in r:
                base_mib = f">={r['baseline_attention_mib']:.0f}*"
            print(
                f"{r['frames']:>4} | {_fmt(r['baseline_s']):>8} {_fmt(r['ours_s']):>8} | {base_mib:>9} "
                f"{_fmt(r['ours_working_mib'], 0):>9} {_fmt(r.get('working_ratio'), 3):>6}"
            )
        if any("baseline_skipped" in r for r in global_rows):
            print("* not run: the baseline's attention matrix alone exceeds the memory available")


def parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="test", choices=sorted(GRIDS))
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--frames", type=parse_ints, help="pipeline frame counts, e.g. 4,16 ('' for none)")
    parser.add_argument("--expressions", type=parse_ints, help="expression counts, e.g. 1,3")
    parser.add_argument(
        "--global-frames",
        type=parse_ints,
        help="frame counts of the global-stage rows (default: the preset's; with --frames, the same frames; "
        "'' for none)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant; figures are medians")
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads of each child")
    parser.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        help="OMP_WAIT_POLICY of the children ('' to inherit). PASSIVE by default: on a shared 2-core machine, "
        "OpenMP threads spinning at barriers made both sides 3-4x slower and their timings erratic",
    )
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision", default=None, help="autocast dtype for ours (bf16, fp16); default fp32"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per child")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0

    grid = GRIDS[args.preset]
    frames = args.frames if args.frames is not None else grid["frames"]
    expressions = args.expressions if args.expressions is not None else grid["expressions"]
    if args.global_frames is not None:
        global_frames = args.global_frames
    else:
        global_frames = args.frames if args.frames is not None else grid["global_frames"]
    from mpgsam2.modeling.config import get_config

    args.prior_heads = get_config(args.preset).mask_prior.num_heads

    machine = machine_description()
    software = software_versions()
    command = shlex.join(["python", "benchmarks/pipeline.py", *(argv if argv is not None else sys.argv[1:])])
    print(
        f"preset {args.preset}, {args.threads} threads (OMP_WAIT_POLICY={args.omp_wait_policy or 'inherited'}), "
        f"device {args.device}; {machine}; {software}",
        flush=True,
    )
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mpgsam2-bench-") as work:
        plan = [("pipeline", t, k) for t in frames for k in expressions]
        plan += [("global", t, 1) for t in global_frames]
        for kind, num_frames, num_expressions in plan:
            row = measure(args, kind, num_frames, num_expressions, Path(work))
            row |= {"machine": machine, "software": software, "command": command}
            rows.append(row)
            print(
                f"  {kind:8} T={num_frames:<4} K={num_expressions}: baseline {_fmt(row['baseline_s'])} s, "
                f"ours {_fmt(row['ours_s'])} s; working MiB {_fmt(row['baseline_working_mib'], 0)} / "
                f"{_fmt(row['ours_working_mib'], 0)}"
                + (f"; masks: {mask_verdict(row)}" if kind == "pipeline" else ""),
                flush=True,
            )
    add_expression_costs(rows)
    print_tables(rows)
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
