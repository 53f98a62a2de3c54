"""Matplotlib conventions every fedsynth figure follows: headless (Agg), one panel per item on a
grid with the unused panels hidden, laid out, written to a PNG and closed (a long-running
coordinator must not accumulate open figures). Shared by the evaluation and privacy figures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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
