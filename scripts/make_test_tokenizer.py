"""Writes mpgsam2/assets/test_tokenizer.model: a small sentencepiece model for the untrained "test" preset.

The real checkpoints ship BEiT-3's tokenizer; the random "test" model only needs *a* tokenizer with the
same conventions, small enough to live in the repository. Run: python scripts/make_test_tokenizer.py
"""

import io
from pathlib import Path

import sentencepiece

WORDS = [
    "the",
    "a",
    "an",
    "of",
    "on",
    "in",
    "at",
    "to",
    "with",
    "and",
    "or",
    "left",
    "right",
    "top",
    "bottom",
    "middle",
    "front",
    "back",
    "behind",
    "near",
    "far",
    "first",
    "second",
    "third",
    "last",
    "big",
    "small",
    "large",
    "little",
    "tall",
    "short",
    "long",
    "red",
    "blue",
    "green",
    "yellow",
    "black",
    "white",
    "brown",
    "grey",
    "gray",
    "orange",
    "pink",
    "purple",
    "dark",
    "light",
    "bright",
    "man",
    "woman",
    "boy",
    "girl",
    "child",
    "kid",
    "person",
    "people",
    "player",
    "dog",
    "cat",
    "horse",
    "bird",
    "cow",
    "sheep",
    "car",
    "truck",
    "bus",
    "bike",
    "bicycle",
    "motorcycle",
    "boat",
    "plane",
    "train",
    "ball",
    "cup",
    "mug",
    "kettle",
    "block",
    "blocks",
    "hand",
    "hands",
    "bed",
    "skirt",
    "shirt",
    "jacket",
    "hat",
    "shoe",
    "table",
    "chair",
    "window",
    "door",
    "tree",
    "grass",
    "water",
    "wall",
    "floor",
    "moving",
    "running",
    "jumping",
    "walking",
    "sitting",
    "standing",
    "holding",
    "playing",
    "pouring",
    "juggling",
    "spelling",
    "hidden",
    "under",
    "over",
    "next",
    "between",
    "who",
    "which",
    "that",
    "is",
    "are",
    "his",
    "her",
    "its",
    "their",
    "one",
    "two",
    "three",
    "four",
    "five",
]

TEMPLATES = [
    "the {0} {1}",
    "a {0} on the {1}",
    "the {0} {1} {2}",
    "{0} {1} with the {2}",
    "the {0} who is {1} the {2}",
]


def corpus() -> str:
    lines = []
    n = len(WORDS)
    for i in range(4000):
        template = TEMPLATES[i % len(TEMPLATES)]
        lines.append(template.format(WORDS[i % n], WORDS[(i * 7 + 3) % n], WORDS[(i * 13 + 5) % n]))
    return "\n".join(lines)


def main() -> None:
    out = Path(__file__).resolve().parents[1] / "mpgsam2" / "assets" / "test_tokenizer.model"
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus().splitlines()),
        model_writer=model,
        vocab_size=150,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        # BEiT-3's spm numbering: <unk>=0, <s>=1, </s>=2 (the tokenizer adds the fairseq offset).
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    out.write_bytes(model.getvalue())
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
