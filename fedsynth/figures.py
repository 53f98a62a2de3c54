"""Matplotlib conventions every fedsynth figure follows: headless (Agg), one panel per item on a
grid with the unused panels hidden, laid out, written to a PNG and closed (a long-running
coordinator must not accumulate open figures). Shared by the evaluation and privacy figures.

A figure is a pure function of aggregates and the public schema, and one report run draws the
same ones several times (the plots folder, the fidelity and utility sections, the bundle's copy):
``drawn_once`` keeps the PNG of each distinct input for the process and writes it again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def panel_grid(count: int, max_columns: int, width: float, height: float) -> tuple[Any, list[Any]]:
    """A figure with one ``width`` x ``height`` panel per item, at most ``max_columns`` a row; the
    panels beyond ``count`` are hidden and not returned."""
    columns = min(max_columns, max(count, 1))
    rows = math.ceil(max(count, 1) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    panels = list(axes.flat)
    for axis in panels[count:]:
        axis.axis("off")
    return figure, panels[:count]


def save_figure(figure: Any, path: Path, dpi: int = 100) -> Path:
    """Lay out, write ``path`` as PNG and close ``figure``."""
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


DRAWN_KEPT = 64  # PNGs of about 0.1-0.3 MB each: a bounded memory for a long-running coordinator
_drawn: OrderedDict[str, bytes | None] = OrderedDict()
Draw = TypeVar("Draw", bound=Callable[..., Path | None])


def _plain(value: Any) -> Any:
    """What an argument is for a figure, as JSON (a schema by its declared content)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "item"):  # a NumPy scalar
        return value.item()
    raise TypeError(f"a figure's input of type {type(value).__name__} has no stable content")


def _key(draw: Callable[..., Any], arguments: list[Any]) -> str | None:
    try:
        content = json.dumps([draw.__module__, draw.__qualname__, *arguments], sort_keys=True, default=_plain)
    except (TypeError, ValueError):  # an input without stable content is drawn every time
        return None
    return hashlib.sha256(content.encode()).hexdigest()


def drawn_once(draw: Draw) -> Draw:
    """``draw(source, path, *rest)`` writes one PNG to ``path`` (or returns None: nothing to draw);
    a second call with equal ``source`` and ``rest`` writes the kept bytes instead of drawing."""

    @functools.wraps(draw)
    def wrapper(source: Any, path: Path, *rest: Any, **options: Any) -> Path | None:
        key = _key(draw, [source, rest, options])
        if key is None:
            return draw(source, path, *rest, **options)
        if key in _drawn:
            _drawn.move_to_end(key)
            png = _drawn[key]
            if png is None:
                return None
            path.write_bytes(png)
            return path
        written = draw(source, path, *rest, **options)
        _drawn[key] = None if written is None else written.read_bytes()
        while len(_drawn) > DRAWN_KEPT:
            _drawn.popitem(last=False)
        return written

    return wrapper  # type: ignore[return-value]
