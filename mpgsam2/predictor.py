"""VideoPredictor: expressions in, per-frame masks out.

``segment`` runs the global stage once per expression, then walks the frames in order; SAM 2's image
encoder runs once per frame and its features serve every expression. ``iter_segment`` yields a small typed
result per frame, so long videos stream to disk without holding every logit map.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .devices import autocast, parse_dtype, pick_device
from .model import MPGSAM2
from .session import ExpressionTrack, VideoSession
from .tokenizer import ExpressionTokenizer, load_tokenizer

logger = logging.getLogger(__name__)

MAX_EXPRESSIONS = 50
TEST_TOKENIZER = Path(__file__).parent / "assets" / "test_tokenizer.model"


@dataclass(frozen=True)
class FrameResult:
    """All expressions' results on one frame (K expressions, frame H x W, prior grid g x g)."""

    frame_index: int
    logits: np.ndarray  # (K, H, W) float32 mask logits at the frame's resolution
    masks: np.ndarray  # (K, H, W) bool, sigmoid(logits) > 0.5
    priors: np.ndarray  # (K, g, g) float32 prior-mask probabilities
    object_scores: np.ndarray  # (K,) float32 object-score logits (> 0: the target is visible)


@dataclass(frozen=True)
class ExpressionResult:
    """One expression over the whole video (T frames)."""

    expression: str
    logits: np.ndarray  # (T, H, W) float32
    masks: np.ndarray  # (T, H, W) bool
    priors: np.ndarray  # (T, g, g) float32
    object_scores: np.ndarray  # (T,) float32


def as_frame_array(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(T, H, W, 3) uint8 from an array or a list of (H, W, 3) frames; a clear error otherwise."""
    array = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if array.ndim == 3 and array.shape[-1] == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"Frames must be RGB, shaped (T, H, W, 3) with T >= 1; got {array.shape}.")
    if array.dtype != np.uint8:
        raise ValueError(f"Frames must be uint8 (0-255); got {array.dtype}.")
    return array


def preprocess(frame: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) float32: squashed with PIL bilinear and normalised (official)."""
    resized = np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR), dtype=np.float32)
    tensor = torch.from_numpy(resized / 255.0).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (tensor - mean_t) / std_t


def clean_expressions(expressions: str | Sequence[str]) -> list[str]:
    """The non-blank expressions, stripped; a clear error when none is left or too many are given."""
    if isinstance(expressions, str):
        expressions = [expressions]
    cleaned = [e.strip() for e in expressions if e and e.strip()]
    if not cleaned:
        raise ValueError("Give at least one expression, e.g. 'the dog on the left'.")
    if len(cleaned) > MAX_EXPRESSIONS:
        raise ValueError(f"{len(cleaned)} expressions given; at most {MAX_EXPRESSIONS} run at once.")
    return cleaned


class VideoPredictor:
    """Runs MPG-SAM 2 on frames for one or several referring expressions."""

    def __init__(
        self,
        model: MPGSAM2,
        tokenizer: ExpressionTokenizer,
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
    ):
        self.device = pick_device(device) if device is not None else model.device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.tokenizer.max_tokens = min(tokenizer.max_tokens, model.config.beit3.max_text_tokens)
        self.precision = parse_dtype(precision)
        # True for random weights: user interfaces must say so loudly.
        self.untrained = False

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike = "ytvos",
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
    ) -> VideoPredictor:
        """Model and tokenizer from a hub variant, hub id, local checkpoint folder or weights file.

        ``"test"`` gives the tiny preset with deterministic random weights and a bundled tokenizer: it runs
        everything end to end in seconds but is **untrained** (its masks mean nothing).
        """
        from .checkpoint import load_model, resolve_source
        from .model import build_model

        if str(source) == "test":
            predictor = cls(build_model("test", seed=0), load_tokenizer(TEST_TOKENIZER), device, precision)
            predictor.untrained = True
            return predictor
        path = resolve_source(source)
        model = load_model(path, device=device)
        return cls(model, load_tokenizer(path if path.is_dir() else path.parent), precision=precision)

    @property
    def config(self):
        return self.model.config

    def _sam_input(self, frame: np.ndarray) -> torch.Tensor:
        pre = self.config.preprocess
        image = preprocess(frame, self.config.sam2.image_size, pre.mean, pre.std)
        return image.unsqueeze(0).to(self.device)

    @torch.inference_mode()
    def init_session(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        expressions: str | Sequence[str],
        frame_offset: int = 0,
    ) -> VideoSession:
        """Tokenise the expressions and run the global stage (BEiT-3 + mask prior) for each of them."""
        frames = as_frame_array(frames)
        texts = clean_expressions(expressions)
        pre, beit3 = self.config.preprocess, self.config.beit3
        images = torch.stack([preprocess(f, beit3.image_size, pre.mean, pre.std) for f in frames]).to(
            self.device
        )
        tracks = []
        with autocast(self.device, self.precision):
            for text in texts:
                encoded = self.tokenizer.encode(text)
                if encoded.truncated:
                    logger.warning(
                        "%r was cut to BEiT-3's %d text positions.", text[:60], self.tokenizer.max_tokens
                    )
                if encoded.unknown_only:
                    logger.warning(
                        "No word of %r is in the vocabulary; the model sees only the image.", text[:60]
                    )
                context, _ = self.model.encode_clip(
                    images, encoded.input_ids.to(self.device), encoded.padding.to(self.device)
                )
                context = context.to(self.device, torch.float32)
                merged = self.model.merge_mask_embeddings(context).float()
                tracks.append(ExpressionTrack(encoded, context, merged))
        return VideoSession(
            frames=frames,
            tracks=tracks,
            frame_offset=frame_offset,
            memory_frames=self.config.sam2.num_maskmem - 1,
            pointer_frames=self.config.aggregator.max_object_pointers - 1,
        )

    @torch.inference_mode()
    def step(self, session: VideoSession, frame_index: int) -> FrameResult:
        """Segment frame ``frame_index`` of the session for every expression (frames go in order)."""
        height, width = session.size
        image_size = self.config.sam2.image_size
        with autocast(self.device, self.precision):
            features = self.model.encode_frame(self._sam_input(session.frames[frame_index]))
            outputs = []
            for track in session.tracks:
                output = self.model.track_frame(
                    features, track.context, track.merged_embeddings, track.output_dict, frame_index
                )
                session.remember(track, frame_index, output.memory)
                outputs.append(output)
        low_res = torch.cat([o.low_res_logits for o in outputs]).float()
        # Two bilinear steps (to SAM 2's square resolution, then to the frame's), as the official scripts.
        square = F.interpolate(low_res, size=(image_size, image_size), mode="bilinear", align_corners=False)
        logits = F.interpolate(square, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        threshold = self.config.preprocess.mask_threshold
        probabilities = torch.sigmoid(logits)
        return FrameResult(
            frame_index=session.frame_offset + frame_index,
            logits=logits.cpu().numpy(),
            masks=(probabilities > threshold).cpu().numpy(),
            priors=torch.stack([t.context.priors[frame_index] for t in session.tracks]).float().cpu().numpy(),
            object_scores=torch.cat([o.decoder.object_score_logits.reshape(1) for o in outputs])
            .float()
            .cpu()
            .numpy(),
        )

    def propagate(self, session: VideoSession) -> Iterator[FrameResult]:
        """Yield every frame's result in order."""
        for frame_index in range(session.num_frames):
            yield self.step(session, frame_index)

    def iter_segment(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        expressions: str | Sequence[str],
        clip_length: int | None = None,
    ) -> Iterator[FrameResult]:
        """Segment a video frame by frame.

        Args:
            frames: (T, H, W, 3) uint8 RGB, or a list of (H, W, 3).
            expressions: one string or a list (several targets at once; blank ones are skipped).
            clip_length: None for the whole video in one pass (Ref-YouTube-VOS style, the default), or a
                number of frames per independent clip (MeViS style: 24).
        """
        frames = as_frame_array(frames)
        texts = clean_expressions(expressions)
        step = clip_length or len(frames)
        if step < 1:
            raise ValueError("clip_length must be at least 1 frame.")
        for start in range(0, len(frames), step):
            session = self.init_session(frames[start : start + step], texts, frame_offset=start)
            yield from self.propagate(session)

    def segment(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        expressions: str | Sequence[str],
        clip_length: int | None = None,
    ) -> list[ExpressionResult]:
        """Segment a video: one :class:`ExpressionResult` per (non-blank) expression, in order."""
        texts = clean_expressions(expressions)
        results = list(self.iter_segment(frames, texts, clip_length))
        return [
            ExpressionResult(
                expression=text,
                logits=np.stack([r.logits[k] for r in results]),
                masks=np.stack([r.masks[k] for r in results]),
                priors=np.stack([r.priors[k] for r in results]),
                object_scores=np.array([r.object_scores[k] for r in results], dtype=np.float32),
            )
            for k, text in enumerate(texts)
        ]
