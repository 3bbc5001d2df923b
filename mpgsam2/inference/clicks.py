"""Clicks that correct an expression's target: points on frames, positive (the target is here) or negative
(it is not), in the frame's own pixel coordinates.

A clicked frame is decoded with its points in SAM 2's sparse prompt, where the official model puts its two
"no point" tokens, and its memory becomes a conditioning memory that the later frames attend to (see
:meth:`mpgsam2.inference.predictor.VideoPredictor.refine`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

#: SAM 2's point labels.
POSITIVE, NEGATIVE = 1, 0


@dataclass(frozen=True)
class Click:
    """A point on one frame: ``x`` from the left edge, ``y`` from the top, in the frame's pixels."""

    frame_index: int
    x: float
    y: float
    positive: bool = True

    def to_dict(self) -> dict:
        return {"frame": self.frame_index, "x": self.x, "y": self.y, "positive": self.positive}

    @classmethod
    def from_dict(cls, data: dict) -> Click:
        return cls(int(data["frame"]), float(data["x"]), float(data["y"]), bool(data.get("positive", True)))


_CLICK = re.compile(r"^(?P<expression>.+):(?P<frame>\d+):(?P<x>[\d.]+),(?P<y>[\d.]+)(?::(?P<sign>neg|pos))?$")


def parse_click(text: str) -> tuple[str, Click]:
    """``"EXPRESSION:FRAME:X,Y"`` (``:neg`` at the end for a negative point) -> (expression, click).

    Raises:
        ValueError: the text is not of that form.
    """
    match = _CLICK.match(text.strip())
    if match is None:
        raise ValueError(
            f"A point is written EXPRESSION:FRAME:X,Y (and :neg for a negative one), e.g. "
            f"'the ball:12:320,180'; got {text!r}."
        )
    click = Click(int(match["frame"]), float(match["x"]), float(match["y"]), match["sign"] != "neg")
    return match["expression"].strip(), click


def check_clicks(clicks: Iterable[Click], num_frames: int, height: int, width: int) -> list[Click]:
    """The clicks, each on a frame of the clip and inside it; a clear error otherwise."""
    checked = []
    for click in clicks:
        if not 0 <= click.frame_index < num_frames:
            raise ValueError(
                f"A point is on frame {click.frame_index}; the clip has frames 0 to {num_frames - 1}."
            )
        if not (0 <= click.x <= width and 0 <= click.y <= height):
            raise ValueError(
                f"The point ({click.x:g}, {click.y:g}) on frame {click.frame_index} is outside the "
                f"{width}x{height} frame."
            )
        checked.append(click)
    return checked


def point_prompt(
    clicks: Sequence[Click], height: int, width: int, image_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's clicks as SAM 2's point prompt: ((1, n, 2) coordinates in its S x S input, (1, n) labels).

    Frames are squashed to the square input, so each axis scales on its own (as SAM 2's video predictor
    normalises clicks by the video's width and height).
    """
    coordinates = [(c.x * image_size / width, c.y * image_size / height) for c in clicks]
    labels = [POSITIVE if c.positive else NEGATIVE for c in clicks]
    return (
        torch.tensor([coordinates], dtype=torch.float32, device=device),
        torch.tensor([labels], dtype=torch.int32, device=device),
    )
