"""Writes mpgsam2/assets/toy_tokenizer.model: a sentencepiece model of the toy dataset's vocabulary.

The "toy" preset is trained on the expressions of :mod:`mpgsam2.datasets.toy`; its BEiT-3 text embedding has
one row per token, so a vocabulary made for those expressions keeps it small (128 rows with ``[SEG]``). Every
word of :data:`mpgsam2.datasets.toy.VOCABULARY` is one piece; other text falls back to single characters. The
conventions are BEiT-3's (a unigram model; ``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2; the tokenizer adds the
fairseq offset, pads with ``<unk>`` and appends ``[SEG]``).

Given so small a grammar, the sentencepiece trainer keeps only parts of words (a unigram model of 66 pieces,
whatever the size asked), so the model is trained on the characters alone and the word pieces are added to
it, scored so that a whole word always beats its spelling.

Run: python scripts/make_toy_tokenizer.py [--output PATH]
"""

from __future__ import annotations

import argparse
import io
import logging
import string
from pathlib import Path

import sentencepiece
from sentencepiece import sentencepiece_model_pb2

from mpgsam2.datasets.toy.vocabulary import VOCABULARY

logger = logging.getLogger("make_toy_tokenizer")

CHARACTERS = string.ascii_letters + string.digits + string.punctuation
ASSET = Path(__file__).resolve().parents[1] / "mpgsam2" / "assets" / "toy_tokenizer.model"
# sentencepiece's mark of a word boundary, which starts every word piece.
WORD_START = "\u2581"


def build_model() -> bytes:
    """The serialised sentencepiece model: characters from the trainer, whole words added."""
    trained = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(CHARACTERS)] * 4),
        model_writer=trained,
        vocab_size=len(CHARACTERS) + 4,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        # No Unicode normalisation table: it would be most of the file, and the toy text is plain ASCII.
        normalization_rule_name="identity",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(trained.getvalue())
    # Characters cost at least 5 each (and a word boundary 5), a whole word 1: a word is never spelled out.
    for piece in proto.pieces:
        if piece.type == sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL:
            piece.score = min(piece.score, -5.0)
    known = {piece.piece for piece in proto.pieces}
    for word in VOCABULARY:
        if f"{WORD_START}{word}" not in known:
            proto.pieces.add(
                piece=f"{WORD_START}{word}",
                score=-1.0,
                type=sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL,
            )
    model = proto.SerializeToString()
    processor = sentencepiece.SentencePieceProcessor(model_proto=model)
    split = [w for w in VOCABULARY if len(processor.encode(f"the {w} on", out_type=str)) != 3]
    if split:
        raise SystemExit(f"Words split into several pieces: {split}.")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ASSET, help=f"where to write (default: {ASSET})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = build_model()
    args.output.write_bytes(model)
    pieces = sentencepiece.SentencePieceProcessor(model_proto=model).get_piece_size()
    logger.info("wrote %s (%d bytes, %d pieces)", args.output, len(model), pieces)


if __name__ == "__main__":
    main()
