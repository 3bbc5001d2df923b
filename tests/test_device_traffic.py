"""What crosses between host and device in the tracking loop, counted on the ``meta`` device.

A function mode logs every host-device copy and every call that would wait for the device (``.item()``,
``bool()``, ``.numpy()``...) while the untrained test model runs on ``meta`` (shapes without values: what
would go to the host is answered with zeros). Per frame, once the loop runs, one frame goes up (the next one,
as uint8) and one buffer comes down (masks, priors, scores), whatever the number of expressions, with no
other wait and no tensor made on the host.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from mpgsam2 import VideoPredictor, build_model, load_tokenizer
from mpgsam2.tokenizer import TEST_TOKENIZER

WAITS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.numpy,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
}
MOVES = {torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda}


class TrafficProbe(TorchFunctionMode):
    """Logs ("copy", "src->dst"), ("wait", name) and ("host tensor", name) events."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else None
        if func in WAITS and isinstance(first, torch.Tensor) and first.is_meta:
            self.events.append(("wait", func.__name__))
            stand_in = torch.zeros(first.shape, dtype=first.dtype)
            return func(stand_in, *args[1:], **kwargs)
        if func in MOVES and isinstance(first, torch.Tensor):
            if func is torch.Tensor.cpu and first.is_meta:
                self.events.append(("copy", "meta->cpu"))
                return torch.zeros(first.shape, dtype=first.dtype)
            moved = func(*args, **kwargs)
            if isinstance(moved, torch.Tensor) and moved.device != first.device:
                self.events.append(("copy", f"{first.device.type}->{moved.device.type}"))
            return moved
        if func in (torch.tensor, torch.as_tensor, torch.from_numpy):
            self.events.append(("host tensor", func.__name__))
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def meta_predictor():
    return VideoPredictor(
        build_model("test", seed=0).to("meta"), load_tokenizer(TEST_TOKENIZER), device="meta"
    )


def traffic_per_frame(predictor: VideoPredictor, expressions: list[str], frames: np.ndarray) -> list[Counter]:
    probe = TrafficProbe()
    per_frame = []
    with probe:
        session = predictor.init_session(frames, expressions)
        for t in range(len(frames)):
            before = len(probe.events)
            predictor.launch(session, t).result()
            per_frame.append(Counter(probe.events[before:]))
    return per_frame


def test_one_copy_each_way_per_frame_whatever_the_number_of_expressions(meta_predictor):
    frames = np.random.default_rng(0).integers(0, 255, (6, 48, 64, 3), dtype=np.uint8)
    one = traffic_per_frame(meta_predictor, ["the red square"], frames)
    three = traffic_per_frame(meta_predictor, ["the red square", "the blue circle", "a thing"], frames)
    steady = Counter({("copy", "cpu->meta"): 1, ("copy", "meta->cpu"): 1})
    for counts in (one, three):
        assert counts[0] == steady + Counter({("copy", "cpu->meta"): 1})  # frame 0's own upload, too
        assert counts[1:-1] == [steady] * 4
        assert counts[-1] == Counter({("copy", "meta->cpu"): 1})  # no next frame to send


def test_after_running_out_of_memory_no_session_tensor_is_alive(predictor, tmp_path):
    """The device's cache is emptied once the failed run's tensors are gone: nothing of the session is
    held by the error the caller gets (its traceback would hold the model loop's frames)."""
    import gc
    import weakref
    from pathlib import Path

    from mpgsam2.pipeline import RunOutOfMemory, SegmentOptions, segment_video

    alive: list[weakref.ref] = []
    init_session, launch = predictor.init_session, predictor.launch

    def watched_session(*args, **kwargs):
        session = init_session(*args, **kwargs)
        tensors = [session.tracking.priors, session.tracking.mask_embeddings, *session.contexts[0].priors]
        alive.extend(weakref.ref(t) for t in tensors)
        return session

    def failing_launch(session, frame_index, logits=False):
        if frame_index == 2:
            alive.extend(
                weakref.ref(m["maskmem_features"])
                for m in session.memory_bank["non_cond_frame_outputs"].values()
            )
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return launch(session, frame_index, logits)

    predictor.init_session, predictor.launch = watched_session, failing_launch
    try:
        with pytest.raises(RunOutOfMemory, match="Out of device memory after 2 of 4 frames") as caught:
            bedroom = Path(__file__).resolve().parents[1] / "examples" / "short" / "bedroom_1s_270p.mp4"
            segment_video(predictor, bedroom, ["the girl"], tmp_path, SegmentOptions(max_frames=4))
    finally:
        del predictor.init_session, predictor.launch
    gc.collect()
    assert alive and all(ref() is None for ref in alive), sum(ref() is not None for ref in alive)
    assert caught.value.outputs.num_frames == 2  # the frames done are kept
