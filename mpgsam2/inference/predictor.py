"""VideoPredictor: expressions in, per-frame masks out.

``segment`` runs the global stage once per expression, then walks the frames in order; SAM 2's image
encoder runs once per frame and the expressions advance through the tracking step together, as one batch.
``iter_segment`` yields a small typed result per frame, so long videos stream to disk without holding every
logit map.

On CUDA the loop keeps the device busy: the next frame is resized on the host and sent (as uint8, through
pinned memory) while the device works, a frame's results come back in one non-blocking copy, and the host
waits for a frame only once the next one is queued.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import autocast, parse_dtype, pick_device, supports_dtype, tf32
from ..expressions import clean_expression, clean_expressions
from ..modeling.model import MPGSAM2
from ..modeling.sam2_adapter import TrackOutput
from ..tokenizer import (
    TEST_TOKENIZER,
    EncodedExpression,
    ExpressionTokenizer,
    find_sentencepiece,
    load_tokenizer,
)
from .clicks import Click
from .frames import Normalizer, as_frame_array, resize, to_device
from .refinement import refine
from .results import ExpressionResult, FrameResult, PendingFrame, bit_weights
from .session import VideoSession

logger = logging.getLogger(__name__)


Expressions = str | Sequence[str] | Sequence[EncodedExpression]


class CompiledOrEager:
    """``torch.compile`` of a function, which falls back to the function itself when compiling fails (no
    compiler on the machine, an unsupported operation, a platform without it such as ZeroGPU): said once
    in the log, and the run goes on."""

    def __init__(self, function, **options):
        self.eager = function
        self.compiled = torch.compile(function, **options)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # compilation reports many error types
                self.failed = True
                logger.warning("torch.compile failed (%s: %s); running eagerly.", type(error).__name__, error)
        return self.eager(*args, **kwargs)


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
    """Runs MPG-SAM 2 on frames for one or several referring expressions.

    Args:
        model: the network; moved to ``device``.
        tokenizer: the expressions' tokenizer (left as it is: the predictor cuts expressions to the model's
            text positions in a copy).
        device: where to run (default: the model's device).
        precision: None / "fp32" (the official numbers), "tf32" (fp32 with TF32 matrix products and
            convolutions on CUDA), "bf16" or "fp16" (autocast).
        compile_image_encoder: ``torch.compile`` SAM 2's image encoder (the heaviest part of a frame); when
            compiling fails, the predictor says so once and runs it eagerly.
    """

    def __init__(
        self,
        model: MPGSAM2,
        tokenizer: ExpressionTokenizer,
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
        compile_image_encoder: bool = False,
    ):
        self.device = pick_device(device) if device is not None else model.device
        self.model = model.to(self.device).eval()
        # A copy cut to BEiT-3's text positions: the caller's tokenizer is left as it is.
        self.tokenizer = tokenizer.limited_to(model.config.beit3.max_text_tokens)
        self.tf32 = isinstance(precision, str) and precision.lower() == "tf32"
        self.precision = None if self.tf32 else parse_dtype(precision)
        memory_dtype = getattr(torch, model.config.sam2.memory_storage_dtype)
        # Memories are stored in bfloat16 as the official model does, unless the device cannot (older MPS).
        self.memory_dtype = memory_dtype if supports_dtype(self.device, memory_dtype) else torch.float32
        pre = model.config.preprocess
        self._normalize = Normalizer(pre.mean, pre.std, self.device)
        self.bit_weights = bit_weights(self.device)
        encode = self.model.encode_frame
        self.encode_frame = CompiledOrEager(encode) if compile_image_encoder else encode
        # True for random weights: user interfaces must say so loudly.
        self.untrained = False
        # A model of the toy preset knows generated shapes only: interfaces say what it is.
        self.toy = model.config.name == "toy"

    def precision_scope(self) -> contextlib.ExitStack:
        """The scope of the chosen precision: autocast, and TF32 on or off."""
        scope = contextlib.ExitStack()
        scope.enter_context(autocast(self.device, self.precision))
        scope.enter_context(tf32(self.tf32))
        return scope

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike = "ytvos",
        device: str | torch.device | None = None,
        precision: str | torch.dtype | None = None,
        compile_image_encoder: bool = False,
    ) -> VideoPredictor:
        """Model and tokenizer from a hub variant, hub id, local checkpoint folder or weights file.

        ``"test"`` gives the tiny preset with deterministic random weights and a bundled tokenizer: it runs
        everything end to end in seconds but is **untrained** (its masks mean nothing). ``"toy"`` gives the
        small model trained on generated clips of shapes that ships in ``checkpoints/toy/``: its masks follow
        coloured shapes (e.g. ``examples/toy_shapes.mp4``), not real objects.
        """
        from ..checkpoints import load_model, resolve_source
        from ..modeling.model import build_model

        if str(source) == "test":
            model = build_model("test", seed=0)
            predictor = cls(
                model, load_tokenizer(TEST_TOKENIZER), pick_device(device), precision, compile_image_encoder
            )
            predictor.untrained = True
            return predictor
        path = resolve_source(source)
        model = load_model(path, device=device)
        spm = find_sentencepiece(path if path.is_dir() else path.parent)
        if spm is None:
            raise FileNotFoundError(
                f"No sentencepiece tokenizer (sentencepiece.bpe.model or beit3.spm) beside the weights in {path}."
            )
        return cls(
            model, load_tokenizer(spm), precision=precision, compile_image_encoder=compile_image_encoder
        )

    @property
    def config(self):
        return self.model.config

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
        keep_memories: bool = False,
    ) -> VideoSession:
        """Run the global stage (BEiT-3 + mask prior) of every expression over the frames of one clip.

        Args:
            frames: (T, H, W, 3) uint8 RGB.
            expressions: texts, or expressions already encoded by :meth:`encode`.
            frame_offset: index of the clip's first frame in the whole video (clip-wise mode).
            keep_memories: keep every frame's memory, so that :meth:`refine` can re-track an expression from
                any frame (a memory is 64 x (S/16)^2 bfloat16 values per expression: 0.5 MB at S = 1024).
        """
        frames = as_frame_array(frames)
        beit3 = self.config.beit3
        images = to_device(torch.stack([resize(f, beit3.image_size) for f in frames]), self.device)
        images = self._normalize(images)
        encoded = self.encode(expressions)
        contexts = []
        with self.precision_scope():
            for item in encoded:
                context, _ = self.model.encode_clip(
                    images, item.input_ids.to(self.device), item.padding.to(self.device)
                )
                contexts.append(context.to(self.device, torch.float32))
            tracking = self.model.tracking_context(contexts)
        tracking = dataclasses.replace(
            tracking,
            merged_embeddings=tracking.merged_embeddings.float(),
        )
        return VideoSession(
            frames=frames,
            expressions=encoded,
            contexts=contexts,
            tracking=tracking,
            frame_offset=frame_offset,
            memory_frames=self.config.sam2.num_maskmem - 1,
            pointer_frames=self.config.aggregator.max_object_pointers - 1,
            archive={} if keep_memories else None,
        )

    def sam_input(self, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, S, S) SAM 2's normalised input on the device."""
        return self._normalize(to_device(resize(frame, self.config.sam2.image_size), self.device)).unsqueeze(
            0
        )

    def _upload(self, session: VideoSession, frame_index: int) -> torch.Tensor:
        """Frame ``frame_index`` resized on the host and on its way to the device as uint8 (3, S, S)."""
        if session.prefetched is not None and session.prefetched[0] == frame_index:
            return session.prefetched[1]
        return to_device(resize(session.frames[frame_index], self.config.sam2.image_size), self.device)

    @torch.inference_mode()
    def launch(self, session: VideoSession, frame_index: int, logits: bool = False) -> PendingFrame:
        """Queue frame ``frame_index`` of the session on the device for every expression, start sending the
        next frame, and return the frame's results on their way to the host (frames go in order)."""
        image = self._normalize(self._upload(session, frame_index)).unsqueeze(0)
        with self.precision_scope():
            features = self.encode_frame(image)
            output = self.model.track_frame(
                features, session.tracking, session.memory_bank, frame_index, self.memory_dtype
            )
            session.remember(frame_index, output.memory)
        if frame_index + 1 < session.num_frames:
            session.prefetched = (frame_index + 1, self._upload(session, frame_index + 1))
        return self.frame_result(
            session, frame_index, output, session.tracking.priors[:, frame_index], logits
        )

    def frame_result(
        self,
        session: VideoSession,
        frame_index: int,
        output: TrackOutput,
        priors: torch.Tensor,
        logits: bool,
        expressions: tuple[int, ...] | None = None,
    ) -> PendingFrame:
        """A tracked frame's masks at the frame's size, with its priors (K, g, g) and object scores, on their
        way to the host; ``expressions``: which of the session's expressions the rows are (None: all)."""
        height, width = session.size
        image_size = self.config.sam2.image_size
        low_res = output.low_res_logits.float()
        # Two bilinear steps (to SAM 2's square resolution, then to the frame's), as the official scripts.
        square = F.interpolate(low_res, size=(image_size, image_size), mode="bilinear", align_corners=False)
        full = F.interpolate(square, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        masks = torch.sigmoid(full) > self.config.preprocess.mask_threshold
        return PendingFrame(
            session.frame_offset + frame_index,
            masks,
            priors,
            output.decoder.object_score_logits,
            full if logits else None,
            self.bit_weights,
            expressions,
        )

    def step(self, session: VideoSession, frame_index: int, logits: bool = False) -> FrameResult:
        """Segment frame ``frame_index`` of the session for every expression (frames go in order)."""
        return self.launch(session, frame_index, logits).result()

    def propagate(self, session: VideoSession, logits: bool = False) -> Iterator[FrameResult]:
        """Yield every frame's result in order; each frame's results are read once the next one is queued."""
        pending = None
        for frame_index in range(session.num_frames):
            try:
                queued = self.launch(session, frame_index, logits)
            except Exception:
                if pending is not None:  # the frame before the failure is done: deliver it first
                    yield pending.result()
                raise
            if pending is not None:
                yield pending.result()
            pending = queued
        if pending is not None:
            yield pending.result()

    def refine(
        self, session: VideoSession, expression: int, clicks: Sequence[Click], logits: bool = False
    ) -> Iterator[FrameResult]:
        """Correct one expression with clicks and re-track it from the earliest clicked frame to the end of the
        clip; see :func:`mpgsam2.inference.refinement.refine`. Yields that expression's results (K = 1)."""
        return refine(self, session, expression, clicks, logits)

    def iter_segment(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        expressions: Expressions,
        clip_length: int | None = None,
        logits: bool = False,
    ) -> Iterator[FrameResult]:
        """Segment a video frame by frame.

        Args:
            frames: (T, H, W, 3) uint8 RGB, or a list of (H, W, 3).
            expressions: one per line of a string, or a list (several targets at once; cleaned by
                :func:`mpgsam2.expressions.clean_expressions`), or expressions encoded by :meth:`encode`.
            clip_length: None for the whole video in one pass (Ref-YouTube-VOS style, the default), or a
                number of frames per independent clip (MeViS style: 24).
            logits: also return each frame's mask logits (four bytes a pixel and expression, where masks
                take a bit).
        """
        frames = as_frame_array(frames)
        check_clip_length(clip_length)
        encoded = self.encode(expressions)
        step = clip_length or len(frames)
        for start in range(0, len(frames), step):
            session = self.init_session(frames[start : start + step], encoded, frame_offset=start)
            yield from self.propagate(session, logits)

    def segment(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        expressions: Expressions,
        clip_length: int | None = None,
        logits: bool = True,
    ) -> list[ExpressionResult]:
        """Segment a video: one :class:`ExpressionResult` per expression, in order (with the logits unless
        ``logits=False``)."""
        encoded = self.encode(expressions)
        results = list(self.iter_segment(frames, encoded, clip_length, logits))
        return [
            ExpressionResult(
                expression=item.text,
                masks=np.stack([r.masks[k] for r in results]),
                priors=np.stack([r.priors[k] for r in results]),
                object_scores=np.array([r.object_scores[k] for r in results], dtype=np.float32),
                logits=np.stack([r.logits[k] for r in results]) if logits else None,
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
