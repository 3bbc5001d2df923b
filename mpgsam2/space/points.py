"""Points that correct a target, as the page handles them: a click on a frame view becomes a line of the
points box (``EXPRESSION:FRAME:X,Y``, ``:neg`` at the end for "not the target"), and the box's lines become
the clicks of a run.

A frame view (:func:`mpgsam2.render.frame_view`) has one row per expression and three panels per row (the
frame, the prior mask, the final mask), each the processed frame scaled to the row's height; a click on any
panel of a row names that row's expression and the same place in the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ..expressions import clean_expression
from ..inference.clicks import Click, check_clicks, parse_click

#: Panels side by side in each row of a frame view.
VIEW_PANELS = 3


class PointError(ValueError):
    """A line of the points box that cannot be used; the message says what to change."""


def parse_points(
    text: str | None, expressions: Sequence[str], frames: int, width: int, height: int
) -> tuple[tuple[int, Click], ...]:
    """The points box's lines as (expression index, click) pairs, checked against the run's ``frames``
    processed frames of ``width`` x ``height``; expressions match as the form cleans them, ignoring case.

    Raises:
        PointError: a line not of that form, naming no expression of ``expressions``, or off the frames.
    """
    index = {clean_expression(e).casefold(): k for k, e in enumerate(expressions)}
    clicks = []
    for number, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        try:
            expression, click = parse_click(line)
        except ValueError:
            raise PointError(
                f"Point {number} is not written EXPRESSION:FRAME:X,Y (and :neg for a negative point), "
                "e.g. 'the ball:12:320,180'."
            ) from None
        try:
            check_clicks([click], frames, height, width)
        except ValueError as error:  # frame numbers and coordinates only: no user text is echoed
            raise PointError(f"Point {number}: {error}") from None
        k = index.get(clean_expression(expression).casefold())
        if k is None:
            raise PointError(f"Point {number} names no expression of the form; use one of them.")
        clicks.append((k, click))
    return tuple(clicks)


def point_from_view(
    view: str | Path,
    expressions: Sequence[str],
    frame_index: int,
    width: int,
    height: int,
    x: float,
    y: float,
    positive: bool = True,
) -> str:
    """The points-box line for a click at (``x``, ``y``) on ``view``, the frame view of frame
    ``frame_index`` of a run of ``expressions`` on ``width`` x ``height`` frames.

    Raises:
        PointError: the click is outside the view.
    """
    with Image.open(view) as image:  # the size only: the header is read, not the pixels
        view_width, view_height = image.size
    row_height = view_height / len(expressions)
    panel_width = view_width / VIEW_PANELS
    if not (0 <= x < view_width and 0 <= y < view_height):
        raise PointError("Click inside the frame view.")
    row = min(int(y // row_height), len(expressions) - 1)
    # The clicked view pixel's centre, in the frame; whole pixels, as a click is no finer than the view's.
    frame_x = ((x + 0.5) % panel_width) / panel_width * width
    frame_y = (y + 0.5 - row * row_height) / row_height * height
    sign = "" if positive else ":neg"
    return f"{expressions[row]}:{frame_index}:{round(frame_x)},{round(frame_y)}{sign}"
