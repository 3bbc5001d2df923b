"""The one rule for cleaning referring expressions, used by the library, the command line and the app.

One expression per line of a text (or per item of a list): control characters become spaces, runs of
whitespace one space, ends are stripped and blank lines dropped. What is left must be at least one
expression, at most ``max_count``, none repeated (ignoring case: the same words would give the same target
twice). Case and punctuation are kept: the official model reads the expression as written.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The most expressions one call of the library segments together (the app allows fewer).
MAX_EXPRESSIONS = 50


class ExpressionError(ValueError):
    """Expressions that cannot be segmented; the message says what to change (and never repeats them)."""


def clean_expression(text: str) -> str:
    """One expression: control characters to spaces, runs of whitespace to one space, stripped."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def clean_expressions(expressions: str | Sequence[str] | None, max_count: int = MAX_EXPRESSIONS) -> list[str]:
    """The expressions of a text (one per line) or a list, cleaned by the rule above.

    Raises:
        ExpressionError: none given, more than ``max_count``, or one repeated.
    """
    if expressions is None:
        lines: Sequence[str] = []
    elif isinstance(expressions, str):
        lines = expressions.splitlines()
    else:
        lines = [str(item) for item in expressions]
    cleaned = [text for text in map(clean_expression, lines) if text]
    if not cleaned:
        raise ExpressionError("Type at least one expression, e.g. 'the dog on the left'.")
    if len(cleaned) > max_count:
        raise ExpressionError(
            f"{len(cleaned)} expressions given; at most {max_count} run at once. Remove some lines."
        )
    seen: dict[str, int] = {}
    for number, text in enumerate(cleaned, 1):
        key = text.casefold()
        if key in seen:
            raise ExpressionError(
                f"Expression {number} repeats expression {seen[key]}; remove the repeated line."
            )
        seen[key] = number
    return cleaned
