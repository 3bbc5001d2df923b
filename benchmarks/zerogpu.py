"""The Space under the ZeroGPU emulation of ``tests/zerogpu`` (the ``spaces`` package's real code path on a CPU):

    python benchmarks/zerogpu.py held [--runs 3 --frames 8 --expressions 2 --model test|tiny|ytvos]
        GPU-held seconds per run (from /schedule to /release in the device API's log), on the same clip,
        frames and expressions: the app (decoding before the GPU call, the model's loop in it, the outputs
        after it) against the former call boundary (decoding, the model, the frame views, the video encoding
        and the exports all inside the GPU call). Models other than test get random weights of their
        released sizes (written once to --weights). With ZEROGPU_GPU_UUID set (benchmarks/gpu_check.sh), the
        workers get that real GPU and the main processes none.
    python benchmarks/zerogpu.py startup [--models ytvos,mevis,tiny]
        start-up to a served page and the peak memory of the app's process, with every model loaded at
        start-up as on ZeroGPU, from checkpoints of the released layouts' sizes (random weights, written
        once to --weights).

Prints a JSON object (also written to --json). The figures are CPU-emulation figures: on a GPU the model's
loop is much faster, so the share of the former boundary's CPU work in a reservation is larger than here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZEROGPU = ROOT / "tests" / "zerogpu"
CLIP = ROOT / "examples" / "short" / "cups_2s_360p.mp4"

#: The former call boundary: the whole pipeline inside the one @spaces.GPU call, as the app had it.
FORMER_APP = textwrap.dedent(
    """
    import argparse
    import os
    from pathlib import Path
    import gradio as gr
    import spaces
    from mpgsam2.inference.predictor import VideoPredictor
    from mpgsam2.pipeline import SegmentOptions, SegmentOutputs, iter_segment_video

    MODEL = os.environ["BENCH_MODEL"]
    PREDICTOR = VideoPredictor.from_pretrained(
        MODEL if MODEL == "test" else Path(os.environ["MPGSAM2_WEIGHTS"]) / MODEL
    )


    @spaces.GPU(duration=120)
    def on_gpu(video, expressions, out_dir, frames):
        yield from iter_segment_video(PREDICTOR, video, expressions, out_dir, SegmentOptions(max_frames=frames))


    def segment(video, expressions, max_frames):
        import tempfile
        for event in on_gpu(video, expressions.splitlines(), tempfile.mkdtemp(), int(max_frames)):
            if isinstance(event, SegmentOutputs):
                return str(event.overlay_video)


    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    with gr.Blocks() as demo:
        video, text, frames = gr.Video(), gr.Textbox(), gr.Number()
        gr.Button().click(segment, [video, text, frames], gr.Video(), api_name="segment")
    demo.queue().launch(server_port=parser.parse_args().port)
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class EmulatedApp:
    """An app file launched under the ZeroGPU emulation, with its own device API."""

    def __init__(self, app: Path, args: list[str], work: Path, env: dict[str, str] | None = None):
        sys.path.insert(0, str(ZEROGPU))
        from device_api import DeviceAPI, direct_io_folder

        real_gpu = os.environ.get("ZEROGPU_GPU_UUID")
        self.api = DeviceAPI(gpu_uuid=real_gpu) if real_gpu else DeviceAPI()
        self.server = self.api.serve(0)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            **os.environ,
            "ZEROGPU_DEVICE_API": f"http://127.0.0.1:{self.server.server_address[1]}",
            "ZEROGPU_HOME": str(direct_io_folder(work) if real_gpu else work / "zerogpu"),
            **({"ZEROGPU_REAL_GPU": "1", "CUDA_VISIBLE_DEVICES": ""} if real_gpu else {}),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "GRADIO_TEMP_DIR": str(work / "gradio"),
            "MPGSAM2_SESSIONS_DIR": str(work / "sessions"),
            **(env or {}),
        }
        self.log = open(work / "app.log", "wb")  # noqa: SIM115 - closed in stop()
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, str(ZEROGPU / "launch.py"), str(app), "--port", str(self.port), *args],
            cwd=ROOT,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the forked GPU workers stop with it
        )
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited: see {work / 'app.log'}")
            try:
                with urllib.request.urlopen(self.url + "/config", timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # a worker left behind
        self.server.shutdown()
        self.log.close()


def held(args: argparse.Namespace) -> dict:
    from gradio_client import Client, handle_file

    expressions = "\n".join(["the yellow ball", "the cup on the right", "the hand"][: args.expressions])
    env = {"BENCH_MODEL": args.model}
    if args.model != "test":
        write_random_checkpoints(Path(args.weights), [args.model])
        env["MPGSAM2_WEIGHTS"] = str(args.weights)
    results = {}
    with tempfile.TemporaryDirectory(prefix="zerogpu-held-") as work:
        work = Path(work)
        former = work / "former_app.py"
        former.write_text(FORMER_APP)
        for name, app, app_args in (
            ("app", ROOT / "app.py", ["--model", args.model]),
            ("former", former, []),
        ):
            folder = work / name
            folder.mkdir()
            running = EmulatedApp(app, app_args, folder, env)
            client = Client(running.url, verbose=False, download_files=str(folder / "downloads"))
            walls = []
            for _ in range(args.runs + 1):  # the first run starts the worker: not counted
                started = time.monotonic()
                if name == "app":
                    client.predict(video=handle_file(str(CLIP)), expressions=expressions,
                                   max_frames=args.frames, api_name="/segment")  # fmt: skip
                else:
                    client.predict(handle_file(str(CLIP)), expressions, args.frames, api_name="/segment")
                walls.append(time.monotonic() - started)
            held_s = running.api.held_seconds()[1:]
            results[name] = {
                "gpu_held_s": [round(s, 2) for s in held_s],
                "gpu_held_median_s": round(statistics.median(held_s), 2),
                "wall_s": [round(s, 2) for s in walls[1:]],
            }
            client.close()
            running.stop()
    results["setup"] = {
        "model": args.model,
        "gpu": os.environ.get("ZEROGPU_GPU_UUID", "emulated on the CPU"),
        "clip": CLIP.name,
        "frames": args.frames,
        "expressions": args.expressions,
        "runs": args.runs,
    }
    return results


def write_random_checkpoints(folder: Path, models: list[str]) -> None:
    """Random weights of the released layouts' sizes: ytvos and mevis the large preset, tiny the base one."""
    import shutil

    from mpgsam2 import build_model, save_pretrained
    from mpgsam2.tokenizer import TEST_TOKENIZER

    presets = {"ytvos": "large", "mevis": "large", "tiny": "base"}
    for model in models:
        target = folder / model
        if (target / "model.safetensors").is_file():
            continue
        save_pretrained(build_model(presets[model], seed=0), target, tokenizer_file=TEST_TOKENIZER)
        shutil.copyfile(TEST_TOKENIZER, target / "sentencepiece.bpe.model")


def startup(args: argparse.Namespace) -> dict:
    models = args.models.split(",")
    weights = Path(args.weights)
    write_random_checkpoints(weights, models)
    with tempfile.TemporaryDirectory(prefix="zerogpu-startup-") as work:
        running = EmulatedApp(
            ROOT / "app.py", ["--model", models[0]], Path(work), env={"MPGSAM2_WEIGHTS": str(weights)}
        )
        result = {
            "models": models,
            "startup_s": round(running.startup_s, 1),
            "peak_rss_mib": round(_peak_mib(running.process.pid), 0),
            "checkpoint_mib": {
                m: round((weights / m / "model.safetensors").stat().st_size / 2**20) for m in models
            },
        }
        running.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    held_parser = commands.add_parser("held")
    held_parser.add_argument("--json", type=Path, default=None)
    held_parser.add_argument("--runs", type=int, default=3)
    held_parser.add_argument("--frames", type=int, default=8)
    held_parser.add_argument("--expressions", type=int, default=2)
    held_parser.add_argument("--model", default="test", choices=["test", "tiny", "ytvos", "mevis"])
    start_parser = commands.add_parser("startup")
    start_parser.add_argument("--json", type=Path, default=None)
    start_parser.add_argument("--models", default="ytvos,mevis,tiny")
    for sub in (held_parser, start_parser):
        sub.add_argument("--weights", default=str(Path(tempfile.gettempdir()) / "mpgsam2-random-weights"))
    args = parser.parse_args()
    result = held(args) if args.command == "held" else startup(args)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
