"""MPG-SAM 2 in the browser: drop a clip, type what to follow, see the masks and the prior masks behind them.

Wiring only. Input checks, estimates, session folders, the model store and the run (decode here, the model's
loop in the one ``@spaces.GPU`` entry, outputs here) live in ``mpgsam2/space/``; drawing and exports in the
library.

    python app.py                  # http://127.0.0.1:7860, the ytvos model (the toy model when it cannot load)
    python app.py --model toy      # the small model trained on generated shapes, shipped in checkpoints/toy
    python app.py --model test     # untrained random weights: the whole interface without a download
    python app.py --share          # also a temporary public link
"""

from __future__ import annotations

import argparse
import atexit
import html
import importlib.util
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import spaces
import torch

from mpgsam2 import space
from mpgsam2.devices import pick_device
from mpgsam2.inference.predictor import VideoPredictor
from mpgsam2.inference.results import FrameResult
from mpgsam2.pipeline import FrameDone
from mpgsam2.tokenizer import EncodedExpression

logger = logging.getLogger("mpgsam2.app")

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
DEFAULT_MODEL = os.environ.get("MPGSAM2_MODEL", "ytvos")
ZERO_GPU = space.on_zero_gpu()
ON_SPACES = space.on_spaces()
# "Copy a link to this result" (Gradio deep links): on a Space, with --share, or when asked for.
SHARE_LINKS = ON_SPACES or os.environ.get("MPGSAM2_SHARE_LINKS", "") == "1"
MCP_AVAILABLE = importlib.util.find_spec("mcp") is not None  # the gradio[mcp] extra
QUEUE_SIZE = 20
# Runs at once: one per GPU here; on ZeroGPU each run gets its own GPU slot, and ZeroGPU queues the rest.
CONCURRENCY = int(os.environ.get("MPGSAM2_CONCURRENCY", "4" if ZERO_GPU else "1"))
MAX_GPU_SECONDS = space.MAX_GPU_SECONDS if ZERO_GPU else None  # only ZeroGPU limits a run's time
STREAM_EVERY_S = 1.0  # how often a running job shows its newest frame
MAX_UPLOAD = "500mb"
# Gradio's copies of uploads and results (which shared links point to) are kept for a day.
CACHE_CLEANUP = (3600, 24 * 3600)
CSS = """
#model-notice { border: 2px solid #d9480f; border-radius: 8px; padding: 4px 14px; background: #fff4e6; }
#model-notice * { color: #1a1a1a; }
"""

DESCRIPTION = """\
# MPG-SAM 2: segment what a sentence describes, in any video
Upload a clip, type one expression per target ("the yellow ball", "the cup on the right") and
[MPG-SAM 2](https://github.com/rongfu-dsb/MPG-SAM2) (ICCV 2025) follows each target through every frame. The
frame view shows what the model saw on the way: each frame, the **prior mask** that its multimodal encoder
proposed and the **final mask**; the timeline shows when each target is visible, hidden or gone.
"""

EXAMPLES = [
    # video, expressions, trim start, trim end, frames per second, maximum frames
    [str(EXAMPLES_DIR / "02_cups.mp4"), "the yellow ball\nthe cup on the right", 0, 0, 15, 150],
    [str(EXAMPLES_DIR / "bedroom.mp4"), "the girl in the blue skirt\nthe boy", 0, 0, 15, 100],
    [str(EXAMPLES_DIR / "04_coffee.mp4"), "the blue mug\nthe kettle", 0, 0, 15, 150],
    [str(EXAMPLES_DIR / "05_default_juggle.mp4"), "the ball\nthe man", 0, 0, 12, 120],
    [str(EXAMPLES_DIR / "01_dog.mp4"), "the dog\nthe woman", 0, 0, 15, 150],
]
EXAMPLE_LABELS = [
    "Occlusion: the ball under the cups",
    "Two children",
    "Mug and kettle",
    "Juggling",
    "Dog and owner",
]
# The clip of generated shapes that the toy model knows (first when the app runs the toy model).
TOY_EXAMPLE = [
    str(EXAMPLES_DIR / "toy_shapes.mp4"),
    "the yellow circle that goes behind the big shape\nthe green circle",
    0,
    0,
    10,
    150,
]
TOY_EXAMPLE_LABEL = "Toy shapes (for the toy model)"

# The models offered (the launch model first when it is not a released variant); set in main().
MODEL_CHOICES: list[str] = space.model_choices(DEFAULT_MODEL)

# On ZeroGPU models load at start-up in the main thread (its torch patching holds there only).
MODELS = space.ModelStore(
    VideoPredictor.from_pretrained, checkpoints_dir=ROOT / "checkpoints", lazy=not ZERO_GPU
)
SESSIONS = space.RunFolders(os.environ.get("MPGSAM2_SESSIONS_DIR") or None)
TIMINGS = space.TimingLog()
atexit.register(SESSIONS.close)


def _device() -> tuple[str, str]:
    """The device kind for the estimates, and its name for people."""
    if ZERO_GPU:
        return "cuda", "a ZeroGPU GPU"
    device = pick_device()
    if device.type == "cuda":
        return "cuda", f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "mps", "the Apple GPU (MPS)"
    threads = torch.get_num_threads()
    return "cpu", f"the CPU ({threads} thread{'s' if threads != 1 else ''})"


DEVICE_KIND, DEVICE_LABEL = _device()


def _error(message: str) -> gr.Error:
    # Gradio shows error messages as (sanitised) HTML: escape, so that they read exactly as written.
    return gr.Error(html.escape(message, quote=False))


def gpu_duration(job: space.Job, *_: Any) -> int:
    """ZeroGPU reservation for one run's model loop, from its frames x expressions."""
    return space.gpu_duration(job, TIMINGS, MAX_GPU_SECONDS or space.MAX_GPU_SECONDS)


@spaces.GPU(duration=gpu_duration)
def segment_on_gpu(
    job: space.Job, frames_file: str, expressions: Sequence[EncodedExpression], stop_flag: str
) -> Iterator[FrameResult | space.LoopFailure]:
    """The one GPU entry: the model's loop only, frame by frame (a correction re-tracks only what its new
    clicks change)."""
    predictor = MODELS.get(job.model)
    yield from space.device_loop(
        predictor,
        frames_file,
        expressions,
        job.options.clip_length,
        stop_flag,
        job.pending_clicks,
        job.resume_from,
    )


RUNNER = space.Runner(
    MODELS, SESSIONS, TIMINGS, DEVICE_KIND, segment_on_gpu, gpu_seconds=gpu_duration if ZERO_GPU else None
)


def _check(*form: Any) -> space.Job:
    """The form's values (video, expressions, model, start, end, fps, max frames, opacity) as a job; raises
    ``space.InputError``."""
    return space.plan_job(*form, models=MODEL_CHOICES, max_gpu_seconds=MAX_GPU_SECONDS, timings=TIMINGS)


def _plan(*form: Any) -> space.Job:
    try:
        return _check(*form)
    except space.InputError as error:
        raise _error(str(error)) from None


def _execute(
    job: space.Job, session_hash: str | None, progress: gr.Progress | None
) -> Iterator[FrameDone | space.Finished]:
    """Run ``job`` (see ``space.Runner``): its frames as they finish, then the outputs; a run without any
    result is the one ``gr.Error``."""
    try:
        for event in RUNNER.run(job, session_hash):
            if isinstance(event, FrameDone) and progress is not None:
                progress((event.done, event.total), desc="Segmenting", unit="frames")
            yield event
    except space.RunError as error:
        raise _error(str(error)) from None


def _summary(finished: space.Finished) -> str:
    return space.summary_text(finished.outputs, finished.outputs.seconds, finished.untrained)


def show_results(finished: space.Finished | None) -> tuple[Any, ...]:
    """The results of a finished run: overlay, frame views, timeline, downloads.

    Plain values only: Gradio's shared links save the values of components, and lose those of components
    updated through ``gr.update`` or ``gr.skip``. The frame slider follows the frame views
    (``slider_for_frames``).
    """
    if finished is None:
        raise _error("There is no result to show yet; press Run.")
    outputs = finished.outputs
    frames = [str(view) for view in outputs.prior_views]
    return str(outputs.overlay_video), frames, str(outputs.timeline_png), space.download_files(outputs)


def slider_for_frames(frames: list[str] | None) -> dict[str, Any]:
    """The frame slider for a run's frame views: shown, from the first frame to the last."""
    last = len(frames) - 1 if frames else 0
    return gr.update(maximum=max(1, last), value=0, visible=bool(frames), interactive=last > 0)


def run(
    video: str | None,
    expressions: str | None,
    model: str,
    start_s: float | None,
    end_s: float | None,
    fps: float | None,
    max_frames: float | None,
    opacity: float | None,
    points: str | None,
    previous: space.Finished | None,
    request: gr.Request,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way of asking for a progress bar
) -> Iterator[tuple[str, str | None, space.Finished | None]]:
    """The page's Run (and Re-track) button: the status and the newest frame view while it works, then the
    summary, the first frame view and the run's result (which ``show_results`` then shows).

    When ``previous`` (the result shown) is of the same clip and expressions, and the points only add clicks
    to its own, only the frames that the new clicks change are tracked again."""
    job = space.as_correction(
        _plan(video, expressions, model, start_s, end_s, fps, max_frames, opacity, points), previous
    )
    count = len(job.expressions)
    # The result shown stays the one that new points correct until a new one replaces it.
    if job.resume_from:
        yield f"Re-tracking {job.retracked_frames} frames from the new points.", None, previous
    else:
        yield (
            f"Starting: about {job.frames} frames x {count} expression{'s' if count != 1 else ''}.",
            None,
            previous,
        )
    shown = 0.0
    try:
        for event in _execute(job, request.session_hash, progress):
            if isinstance(event, space.Finished):
                yield _summary(event), str(event.outputs.prior_views[0]), event
            elif time.monotonic() - shown >= STREAM_EVERY_S:
                shown = time.monotonic()
                yield (
                    f"Segmenting: frame {event.done} of {event.total} done.",
                    str(event.frame_view),
                    previous,
                )
    except gr.Error:
        yield (
            "The run did not finish (see the message); the results shown, if any, are the previous run's.",
            None,
            previous,
        )
        raise


def segment(
    video: str,
    expressions: str,
    model: str = DEFAULT_MODEL,
    start_s: float = 0,
    end_s: float = 0,
    fps: float = 0,
    max_frames: float = space.DEFAULT_MAX_FRAMES,
    opacity: float = 0.5,
    points: str | None = None,
    request: gr.Request | None = None,
    progress: gr.Progress = gr.Progress(),  # noqa: B008
) -> tuple[str, str, str, str, str, dict[str, Any]]:
    """Segment the objects that referring expressions describe in a video, with MPG-SAM 2.

    Args:
        video: the video file (mp4, webm, mov, mkv, avi or gif).
        expressions: the referring expressions, one per line, e.g. "the yellow ball" and "the cup on the right".
        model: the checkpoint: ytvos (Ref-YouTube-VOS), mevis (MeViS), tiny (BEiT-3-base), or toy (trained on
            generated shapes only).
        start_s: trim start in seconds; 0 is the beginning.
        end_s: trim end in seconds; 0 is the end of the video.
        fps: frames per second to process; 0 keeps the video's own rate.
        max_frames: process at most this many frames.
        opacity: mask opacity in the overlay video, from 0 to 1.
        points: clicks that correct a target, one per line: EXPRESSION:FRAME:X,Y (":neg" at the end for "not
            the target"), frames counted from 0 in the processed frames, X and Y in their pixels; each clicked
            expression is re-tracked from its earliest clicked frame.

    Returns:
        The overlay video (H.264 mp4 at the processed frame rate, with the source audio), a zip bundling the
        downloads, the masks as a zip of palette PNGs (pixel value k = expression k), the masks as COCO RLE
        JSON, the presence timeline (PNG), and a summary (per expression: frames with a mask, first and last
        visible time, spans where it is not visible, and whether it matched nothing).
    """
    job = _plan(video, expressions, model, start_s, end_s, fps, max_frames, opacity, points)
    for event in _execute(job, request.session_hash if request is not None else None, progress):
        if isinstance(event, space.Finished):
            outputs = event.outputs
            summary = space.result_json(outputs, job, outputs.seconds, DEVICE_LABEL, event.untrained)
            return (
                str(outputs.overlay_video),
                str(outputs.bundle_zip),
                str(outputs.palette_zip),
                str(outputs.rle_json),
                str(outputs.timeline_png),
                summary,
            )
    raise _error("The run ended without results; please try again.")


def run_example(
    video: str,
    expressions: str,
    start_s: float,
    end_s: float,
    fps: float,
    max_frames: float,
    request: gr.Request,
) -> tuple[Any, ...]:
    """An example row with the launch model (its results are cached after the first click)."""
    job = _plan(video, expressions, MODEL_CHOICES[0], start_s, end_s, fps, max_frames, 0.5)
    for event in _execute(job, request.session_hash if request is not None else None, None):
        if isinstance(event, space.Finished):
            overlay, frames, timeline, downloads = show_results(event)
            return overlay, _summary(event), frames[0], frames, timeline, downloads
    raise _error("The example ended without results; please try again.")


def validate(
    video: str | None,
    expressions: str | None,
    model: str,
    start_s: float | None,
    end_s: float | None,
    fps: float | None,
    max_frames: float | None,
    opacity: float | None,
    points: str | None = None,
) -> list[dict[str, Any]]:
    """Gradio's validator: runs before the job is queued, so impossible requests cost no GPU time."""
    try:
        _check(video, expressions, model, start_s, end_s, fps, max_frames, opacity, points)
    except space.InputError as error:
        checks = [
            gr.validate(name not in error.problems, error.problems.get(name, "")) for name in space.FIELDS
        ]
    else:
        checks = [gr.validate(True, "") for _ in space.FIELDS]
    return checks


def validate_run(*values: Any) -> list[dict[str, Any]]:
    """The page's Run validator: the form, then the result shown (never wrong); one answer per input."""
    return [*validate(*values[:-1]), gr.validate(True, "")]


def estimate(*form: Any) -> str:
    """The work and time estimate shown before a run, for the form's values (all but the opacity)."""
    return space.estimate_line(
        *form,
        device_kind=DEVICE_KIND,
        device_label=DEVICE_LABEL,
        timings=TIMINGS,
        models=MODEL_CHOICES,
        max_gpu_seconds=MAX_GPU_SECONDS,
    )


def add_point(
    points: str | None, index: float, negative: bool, finished: space.Finished | None, event: gr.SelectData
) -> str:
    """A click on the frame view: the row names the expression, the place is where its target is (or, with
    ``negative``, is not); the point joins the points box as a line ``EXPRESSION:FRAME:X,Y[:neg]``."""
    if finished is None or not finished.outputs.prior_views:
        raise _error("Run first; then click on the frame view to correct a target.")
    outputs = finished.outputs
    frame = min(max(int(index or 0), 0), len(outputs.prior_views) - 1)
    x, y = event.index
    try:
        line = space.point_from_view(
            outputs.prior_views[frame],
            outputs.expressions,
            frame,
            outputs.width,
            outputs.height,
            x,
            y,
            not negative,
        )
    except space.PointError as error:
        raise _error(str(error)) from None
    return "\n".join([*(points or "").strip().splitlines(), line])


def preview_point(
    video: str | None,
    expressions: str | None,
    model: str,
    start_s: float | None,
    end_s: float | None,
    fps: float | None,
    max_frames: float | None,
    opacity: float | None,
    points: str | None,
    previous: space.Finished | None,
    index: float,
    request: gr.Request,
) -> Any:
    """Right after a click: the clicked frame with its target corrected by the points so far (a short GPU
    call), before "Re-track" applies them to the frames after it. Points that do not add to the result
    shown (another clip or options, or a point removed) wait for Re-track, which then runs the whole clip."""
    try:
        job = space.as_correction(
            _check(video, expressions, model, start_s, end_s, fps, max_frames, opacity, points), previous
        )
    except space.InputError:
        return gr.skip()
    if not job.resume_from:
        return gr.skip()
    try:
        view = RUNNER.preview(job, request.session_hash, int(index or 0))
    except space.RunError as error:
        raise _error(str(error)) from None
    gr.Info("The frame with the points; press Re-track to follow the corrected target through the clip.")
    return view


def undo_point(points: str | None) -> str:
    return "\n".join((points or "").strip().splitlines()[:-1])


def show_frame(index: float, frames: list[str] | None) -> str | None:
    """Frame ``index`` of the last run: [frame | prior mask | final mask], one row per expression."""
    if not frames:
        return None
    return frames[min(max(int(index), 0), len(frames) - 1)]


def stop(request: gr.Request) -> None:
    if SESSIONS.request_stop(request.session_hash):
        gr.Info("Stopping after the current frame; the results will cover the frames done so far.")
    else:
        gr.Info("Nothing is running.")


def end_session(request: gr.Request) -> None:
    SESSIONS.remove(request.session_hash)


def build_demo(notice: str = "", share_links: bool = False) -> gr.Blocks:
    with gr.Blocks(title="MPG-SAM 2", delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(DESCRIPTION)
        gr.Markdown(notice, visible=bool(notice), elem_id="model-notice")
        with gr.Row():
            with gr.Column(scale=1):
                video_in = gr.Video(label="Video", sources=["upload"], elem_id="video-input")
                expressions_in = gr.Textbox(
                    label="Expressions, one per line (one target each)",
                    placeholder="the yellow ball\nthe cup on the right",
                    lines=3,
                    max_lines=space.MAX_EXPRESSIONS,
                    elem_id="expressions",
                )
                model_in = gr.Dropdown(MODEL_CHOICES, value=MODEL_CHOICES[0], label="Model", elem_id="model")
                # Numbers without bounds in the components: the validator says what is out of range.
                with gr.Row():
                    start_in = gr.Number(0, label="Trim start (s)", elem_id="start")
                    end_in = gr.Number(0, label="Trim end (s, 0 = the end)", elem_id="end")
                with gr.Row():
                    fps_in = gr.Number(0, label="Frames per second (0 = the video's)", elem_id="fps")
                    max_frames_in = gr.Number(
                        space.DEFAULT_MAX_FRAMES,
                        label=f"Maximum frames (up to {space.MAX_FRAMES})",
                        precision=0,
                        elem_id="max-frames",
                    )
                opacity_in = gr.Slider(0, 1, value=0.5, step=0.05, label="Mask opacity", elem_id="opacity")
                estimate_out = gr.Textbox(
                    "Upload a video to see how much work it is.",
                    label="Estimate",
                    interactive=False,
                    lines=2,
                    elem_id="estimate",
                )
                with gr.Row():
                    run_button = gr.Button("Run", variant="primary", elem_id="run-button")
                    stop_button = gr.Button("Stop (keep the frames done)", elem_id="stop-button")
            with gr.Column(scale=1):
                overlay_out = gr.Video(label="Overlay", interactive=False, elem_id="overlay-video")
                summary_out = gr.Textbox(label="Summary", interactive=False, lines=4, elem_id="summary")
                # Shown, with the run's range, by the first result. The server checks values against the
                # range given here (a shared link restores only what the page shows), hence the maximum.
                frame_slider = gr.Slider(
                    0,
                    space.MAX_FRAMES - 1,
                    value=0,
                    step=1,
                    label="Frame",
                    visible=False,
                    elem_id="frame-slider",
                )
                frame_out = gr.Image(
                    label="Frame view: frame | prior mask | final mask (one row per expression)",
                    type="filepath",
                    interactive=False,
                    elem_id="frame-view",
                )
                with gr.Accordion("Correct a target: click on the frame view", open=True):
                    gr.Markdown(
                        "Click where a target is (in any panel of its row) to add a point; tick the box first "
                        "to mark where it is **not**. Then re-track: each corrected expression is followed again "
                        "from its first clicked frame."
                    )
                    points_in = gr.Textbox(
                        "",
                        label="Points: EXPRESSION:FRAME:X,Y (':neg' at the end: not the target)",
                        placeholder="the yellow ball:12:320,180",
                        lines=2,
                        elem_id="points",
                    )
                    with gr.Row():
                        negative_in = gr.Checkbox(
                            False, label="Clicks mark where the target is not", elem_id="negative-points"
                        )
                        undo_button = gr.Button("Undo last point", size="sm", elem_id="undo-point")
                        clear_button = gr.Button("Clear points", size="sm", elem_id="clear-points")
                    retrack_button = gr.Button(
                        "Re-track with the points", variant="primary", elem_id="retrack"
                    )
                timeline_out = gr.Image(
                    label="Presence timeline", type="filepath", interactive=False, elem_id="timeline"
                )
                downloads_out = gr.File(
                    label="Downloads: everything (zip), overlay (mp4), palette PNG masks (zip), COCO RLE masks (json)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
                gr.DeepLinkButton("Copy a link to this result", visible=share_links)
        # The frame views of the last run: part of the page state, so shared links can browse them too.
        frames_store = gr.File(file_count="multiple", visible=False)
        result = gr.State()  # the last run's outputs, from `run` to `show_results`
        # Outputs of the /segment API endpoint.
        with gr.Row(visible=False):
            api_button = gr.Button()
            api_outputs = [
                gr.Video(label="overlay video"),
                gr.File(label="bundle zip"),
                gr.File(label="palette PNG masks zip"),
                gr.File(label="COCO RLE masks json"),
                gr.File(label="presence timeline png"),
                gr.JSON(label="summary"),
            ]

        inputs = [
            video_in, expressions_in, model_in, start_in, end_in, fps_in, max_frames_in, opacity_in, points_in
        ]  # fmt: skip
        page_outputs = [overlay_out, summary_out, frame_out, frames_store, timeline_out, downloads_out]
        examples = list(zip([*EXAMPLES, TOY_EXAMPLE], [*EXAMPLE_LABELS, TOY_EXAMPLE_LABEL]))
        if MODEL_CHOICES[0] == space.TOY_MODEL:
            examples.insert(0, examples.pop())  # the clip that model knows first
        gr.Examples(
            [row for row, _ in examples],
            inputs=[video_in, expressions_in, start_in, end_in, fps_in, max_frames_in],
            outputs=page_outputs,
            fn=run_example,
            cache_examples=True,
            cache_mode="lazy",
            example_labels=[label for _, label in examples],
            label=f"Examples (run with the {MODEL_CHOICES[0]} model, then cached)",
        )

        for button in (run_button, retrack_button):
            button.click(
                run,
                [*inputs, result],
                [summary_out, frame_out, result],
                validator=validate_run,
                concurrency_id="gpu",
                concurrency_limit=CONCURRENCY,
                show_progress_on=[overlay_out],
                api_visibility="private",
            ).success(
                show_results,
                result,
                [overlay_out, frames_store, timeline_out, downloads_out],
                show_progress="hidden",
                api_visibility="private",
            )
        frame_out.select(
            add_point, [points_in, frame_slider, negative_in, result], points_in, api_visibility="private"
        ).success(
            preview_point,
            [*inputs, result, frame_slider],
            frame_out,
            concurrency_id="gpu",
            concurrency_limit=CONCURRENCY,
            show_progress="minimal",
            api_visibility="private",
        )
        undo_button.click(undo_point, points_in, points_in, queue=False, api_visibility="private")
        clear_button.click(lambda: "", None, points_in, queue=False, api_visibility="private")
        # New frame views (a run's or a cached example's): the slider spans them.
        frames_store.change(
            slider_for_frames, frames_store, frame_slider, show_progress="hidden", api_visibility="private"
        )
        api_button.click(
            segment,
            inputs,
            api_outputs,
            validator=validate,
            api_name="segment",
            concurrency_id="gpu",
            concurrency_limit=CONCURRENCY,
        )
        # Queued (with no limit), so that its message reaches the page; it never waits for a run.
        stop_button.click(stop, None, None, concurrency_limit=None, api_visibility="private")
        frame_slider.change(
            show_frame,
            [frame_slider, frames_store],
            frame_out,
            queue=False,
            show_progress="hidden",
            trigger_mode="always_last",
            api_visibility="private",
        )
        gr.on(
            [
                video_in.change,
                expressions_in.change,
                model_in.change,
                start_in.change,
                end_in.change,
                fps_in.change,
                max_frames_in.change,
            ],
            estimate,
            inputs[:7],
            estimate_out,
            queue=False,
            show_progress="hidden",
            trigger_mode="always_last",
            api_visibility="private",
        )
        demo.unload(end_session)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MPG-SAM 2 referring video segmentation in the browser")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="ytvos (default; the toy model when it cannot be loaded), mevis, tiny, a hub id, a local folder "
        "or weights file, toy (small, trained on generated shapes only), or test (tiny, random, UNTRAINED: to "
        "try the interface without the weights)",
    )
    parser.add_argument("--share", action="store_true", help="also publish a temporary public link")
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--host", default=None, help="address to listen on (default: 127.0.0.1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    MODEL_CHOICES[:] = space.model_choices(args.model)
    # On ZeroGPU every model is loaded at start-up, here in the main thread (GPU workers fork from it).
    for name in MODEL_CHOICES if ZERO_GPU else [args.model]:
        MODELS.try_load(name)
    model, fell_back_from = args.model, None
    # Without reachable weights, an app that segments shapes beats one that cannot segment at all.
    if (
        not MODELS.loaded(model)
        and model not in (space.TOY_MODEL, space.TEST_MODEL)
        and MODELS.try_load(space.TOY_MODEL) is None
    ):
        model, fell_back_from = space.TOY_MODEL, args.model
        MODEL_CHOICES[:] = space.model_choices(model)
    predictor = MODELS.get(model) if MODELS.loaded(model) else None
    untrained = bool(getattr(predictor, "untrained", False))
    notice = space.model_notice(
        model,
        untrained,
        MODELS.error(model),
        toy=bool(getattr(predictor, "toy", False)),
        fell_back_from=fell_back_from,
        fallback_reason=MODELS.error(fell_back_from) if fell_back_from else None,
    )
    if fell_back_from is not None:
        logger.warning("The %s model could not be loaded; running the toy model.", fell_back_from)
    # Example results depend on the model: a cache per model, and a throw-away one for the untrained model.
    cache = SESSIONS.root / "examples" if untrained else ROOT / ".gradio" / space.examples_cache_name(model)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(cache)

    demo = build_demo(notice, share_links=SHARE_LINKS or args.share)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[str(EXAMPLES_DIR)],
        max_file_size=MAX_UPLOAD,
        mcp_server=MCP_AVAILABLE,
        ssr_mode=False,
        css=CSS,
    )


if __name__ == "__main__":
    main()
