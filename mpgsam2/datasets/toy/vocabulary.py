"""The words of the toy dataset: colours, shapes, sizes, positions, and every word an expression can use.

Kept apart from the generator (numpy and Pillow only there), so that ``scripts/make_toy_tokenizer.py`` reads
the vocabulary without drawing anything.
"""

from __future__ import annotations

#: The shapes' colours, saturated so that they stand out from the muted backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "green": (34, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 215, 30),
    "purple": (150, 55, 200),
    "orange": (245, 135, 20),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "star")
SIZES: tuple[str, ...] = ("small", "big")
#: Position words: the image axis (0 = x, 1 = y) and the sign along it that makes a shape extreme.
POSITIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
#: The kinds of expression: attributes alone, position among look-alikes, going behind, passing in front.
KINDS: tuple[str, ...] = ("attributes", "position", "behind", "in_front")

#: Every word an expression can use (the toy tokenizer has one piece per word).
VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(
        ["the", "shape", "that", "goes", "behind", "passes", "in", "front", "of", "on", "at"]
        + list(COLOURS)
        + list(SHAPES)
        + list(SIZES)
        + list(POSITIONS)
    )
)
