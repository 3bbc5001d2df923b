"""The XLM-R sentencepiece tokenizer of the official set-up (BEiT-3's ``beit3.spm``).

The official model loads transformers' slow ``XLMRobertaTokenizer`` on ``beit3.spm``, sets the padding token
to ``<unk>`` and adds ``[SEG]``; the expression is encoded raw (no lower-casing) as
``[<s>, pieces..., </s>]`` with the fairseq id mapping, and every id equal to the padding id is masked out of
attention (so a real ``<unk>`` is too: an official quirk, kept).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: The file name under which checkpoint folders keep the sentencepiece model (transformers' XLM-R name).
SENTENCEPIECE_FILE = "sentencepiece.bpe.model"
#: Names a checkpoint folder may give its sentencepiece model, in the order they are looked for.
SPM_NAMES = (SENTENCEPIECE_FILE, "beit3.spm", "spm.model", "tokenizer.model")
#: The small tokenizer bundled for the untrained "test" model (made by scripts/make_test_tokenizer.py).
TEST_TOKENIZER = Path(__file__).parent / "assets" / "test_tokenizer.model"
#: The toy dataset's vocabulary, one piece per word, for the "toy" preset (scripts/make_toy_tokenizer.py).
TOY_TOKENIZER = Path(__file__).parent / "assets" / "toy_tokenizer.model"


class TokenizerError(ValueError):
    """The tokenizer files are missing or unusable."""


@dataclass(frozen=True)
class EncodedExpression:
    text: str
    input_ids: torch.Tensor  # (L,) int64
    padding: torch.Tensor  # (L,) bool, True where the official attention mask is off
    truncated: bool
    known_tokens: int  # tokens that carry text: neither <unk> nor a bare word boundary

    @property
    def unknown_only(self) -> bool:
        """True when no word of the text is in the vocabulary: the model then sees no text at all."""
        return self.known_tokens == 0


class ExpressionTokenizer:
    """Wraps a transformers XLM-R tokenizer with the official MPG-SAM 2 conventions."""

    def __init__(self, tokenizer, max_tokens: int = 1022):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def limited_to(self, max_tokens: int) -> ExpressionTokenizer:
        """The same tokenizer cutting expressions to at most ``max_tokens`` (this one is left as it is)."""
        return ExpressionTokenizer(self.tokenizer, min(self.max_tokens, max_tokens))

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> EncodedExpression:
        """Token ids of ``text`` as the official model sees them, cut to ``max_tokens`` if longer."""
        ids = self.tokenizer(text).input_ids
        # Flags, not logs: callers (the predictor, the pipeline's user messages) report them once.
        truncated = len(ids) > self.max_tokens
        if truncated:
            ids = ids[: self.max_tokens - 1] + ids[-1:]
        input_ids = torch.tensor(ids, dtype=torch.long)
        pieces = self.tokenizer.convert_ids_to_tokens(ids[1:-1])
        known = sum(1 for i, piece in zip(ids[1:-1], pieces) if i != self.pad_id and piece.strip("\u2581"))
        return EncodedExpression(text, input_ids, input_ids == self.pad_id, truncated, known)


def find_sentencepiece(path: str | os.PathLike) -> Path | None:
    """The sentencepiece model at ``path``: the file itself, or the one a checkpoint folder holds."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        return None
    for name in SPM_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.spm")) + sorted(path.glob("*.model"))
    return found[0] if found else None


def load_tokenizer(path: str | os.PathLike, max_tokens: int = 1022) -> ExpressionTokenizer:
    """Load from a sentencepiece file (``beit3.spm``) or a checkpoint folder holding one."""
    from transformers import XLMRobertaTokenizer

    path = Path(path)
    spm = find_sentencepiece(path)
    if path.is_dir() and (path / "tokenizer_config.json").is_file() and spm is not None:
        folder, cleanup = path, None
    else:
        if spm is None:
            raise TokenizerError(f"No sentencepiece model (beit3.spm / sentencepiece.bpe.model) at {path}.")
        # transformers 5 only builds the sentencepiece-backed tokenizer from a folder with this file name.
        cleanup = tempfile.mkdtemp(prefix="mpgsam2-tok-")
        folder = Path(cleanup)
        shutil.copyfile(spm, folder / SENTENCEPIECE_FILE)
    try:
        tokenizer = XLMRobertaTokenizer.from_pretrained(str(folder))
    except Exception as error:
        raise TokenizerError(f"Could not load the sentencepiece tokenizer from {path}: {error}") from error
    finally:
        if cleanup:
            shutil.rmtree(cleanup, ignore_errors=True)
    # A tokenizer built without the sentencepiece model has only the 5 special tokens and maps every word to
    # <unk>; refuse it rather than segment with meaningless ids.
    if len(tokenizer) <= 5:
        raise TokenizerError(f"The tokenizer from {path} has no vocabulary ({len(tokenizer)} tokens).")
    tokenizer.pad_token = tokenizer.unk_token
    if "[SEG]" not in tokenizer.get_vocab():
        tokenizer.add_tokens("[SEG]")
    return ExpressionTokenizer(tokenizer, max_tokens=max_tokens)
