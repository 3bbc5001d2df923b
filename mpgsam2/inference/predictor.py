"""VideoPredictor: expressions in, per-frame masks out.

``segment`` runs the global stage once per expression, then walks the frames in order; SAM 2's image
encoder runs once per frame and its features serve every expression. ``iter_segment`` yields a small typed
result per frame, so long videos stream to disk without holding every logit map.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import autocast, parse_dtype, pick_device
from ..expressions import clean_expression, clean_expressions
from ..modeling.model import MPGSAM2
from ..tokenizer import (
    TEST_TOKENIZER,
    EncodedExpression,
    ExpressionTokenizer,
    find_sentencepiece,
    load_tokenizer,
)
from .frames import as_frame_array, preprocess
from .session import ExpressionTrack, VideoSession

logger = logging.getLogger(__name__)


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


Expressions = str | Sequence[str] | Sequence[EncodedExpression]


def check_clip_length(clip_length: int | None) -> None:
    """None (the whole video in one pass) or a positive number of frames; a clear error otherwise."""
    if clip_length is not None and (
        isinstance(clip_length, bool) or int(clip_length) != clip_length or clip_length < 1
    ):
        raise ValueError(
            f"clip_length must be a whole number of frames, at least 1 (or None for the whole video); "
            f"got {clip_length!r}."
        )


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
        # A copy cut to BEiT-3's text positions: the caller's tokenizer is left as it is.
        self.tokenizer = tokenizer.limited_to(model.config.beit3.max_text_tokens)
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
        from ..checkpoints import load_model, resolve_source
        from ..modeling.model import build_model

        if str(source) == "test":
            predictor = cls(build_model("test", seed=0), load_tokenizer(TEST_TOKENIZER), device, precision)
            predictor.untrained = True
            return predictor
        path = resolve_source(source)
        model = load_model(path, device=device)
        spm = find_sentencepiece(path if path.is_dir() else path.parent)
        if spm is None:
            raise FileNotFoundError(
                f"No sentencepiece tokenizer (sentencepiece.bpe.model or beit3.spm) beside the weights in {path}."
            )
        return cls(model, load_tokenizer(spm), precision=precision)

    @property
    def config(self):
        return self.model.config

    def _sam_input(self, frame: np.ndarray) -> torch.Tensor:
        pre = self.config.preprocess
        image = preprocess(frame, self.config.sam2.image_size, pre.mean, pre.std)
        return image.unsqueeze(0).to(self.device)

    def encode(self, expressions: Expressions) -> list[EncodedExpression]:
        """The expressions cleaned (:func:`mpgsam2.expressions.clean_expressions`) and tokenised, once.

        Expressions cut to BEiT-3's text positions, or without a word of the vocabulary, are logged here and
        flagged on the result (``truncated``, ``unknown_only``) for user interfaces to report.
        """
        if not isinstance(expressions, str) and expressions and isinstance(expressions[0], EncodedExpression):
            return list(expressions)
        encoded = [self.tokenizer.encode(text) for text in clean_expressions(expressions)]
        for item in encoded:
            if item.truncated:
                logger.warning(
                    "%r was cut to BEiT-3's %d text positions.", item.text[:60], self.tokenizer.max_tokens
                )
            if item.unknown_only:
                logger.warning(
                    "No word of %r is in the vocabulary; the model sees only the image.", item.text[:60]
                )
        return encoded

    @torch.inference_mode()
    def init_session(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        expressions: Expressions,
        frame_offset: int = 0,
    ) -> VideoSession:
        """Run the global stage (BEiT-3 + mask prior) of every expression over the frames of one clip.

        Args:
            frames: (T, H, W, 3) uint8 RGB.
            expressions: texts, or expressions already encoded by :meth:`encode`.
            frame_offset: index of the clip's first frame in the whole video (clip-wise mode).
        """
        frames = as_frame_array(frames)
        pre, beit3 = self.config.preprocess, self.config.beit3
        images = torch.stack([preprocess(f, beit3.image_size, pre.mean, pre.std) for f in frames]).to(
            self.device
        )
        tracks = []
        with autocast(self.device, self.precision):
            for encoded in self.encode(expressions):
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
        expressions: Expressions,
        clip_length: int | None = None,
    ) -> Iterator[FrameResult]:
        """Segment a video frame by frame.

        Args:
            frames: (T, H, W, 3) uint8 RGB, or a list of (H, W, 3).
            expressions: one per line of a string, or a list (several targets at once; cleaned by
                :func:`mpgsam2.expressions.clean_expressions`), or expressions encoded by :meth:`encode`.
            clip_length: None for the whole video in one pass (Ref-YouTube-VOS style, the default), or a
                number of frames per independent clip (MeViS style: 24).
        """
        frames = as_frame_array(frames)
        check_clip_length(clip_length)
        encoded = self.encode(expressions)
        step = clip_length or len(frames)
        for start in range(0, len(frames), step):
            session = self.init_session(frames[start : start + step], encoded, frame_offset=start)
            yield from self.propagate(session)

    def segment(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        expressions: Expressions,
        clip_length: int | None = None,
    ) -> list[ExpressionResult]:
        """Segment a video: one :class:`ExpressionResult` per expression, in order."""
        encoded = self.encode(expressions)
        results = list(self.iter_segment(frames, encoded, clip_length))
        return [
            ExpressionResult(
                expression=item.text,
                logits=np.stack([r.logits[k] for r in results]),
                masks=np.stack([r.masks[k] for r in results]),
                priors=np.stack([r.priors[k] for r in results]),
                object_scores=np.array([r.object_scores[k] for r in results], dtype=np.float32),
            )
            for k, item in enumerate(encoded)
        ]

    def segment_each(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        texts: Sequence[str],
        clip_length: int | None = None,
    ) -> list[ExpressionResult]:
        """One result per text, in order, where texts may repeat (benchmarks list the same words for several
        objects): each distinct expression is segmented once."""
        keys = [clean_expression(text).casefold() for text in texts]
        distinct = {key: clean_expression(text) for key, text in reversed(list(zip(keys, texts)))}
        order = list(dict.fromkeys(keys))
        results = dict(zip(order, self.segment(frames, [distinct[key] for key in order], clip_length)))
        return [
            dataclasses.replace(results[key], expression=clean_expression(text))
            for key, text in zip(keys, texts)
        ]
