"""`drawn_once`: a figure is drawn once per distinct input and written again from the kept PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsynth import figures
from fedsynth.data.datasets import load_dataset
from fedsynth.figures import drawn_once, plt, save_figure


def _counting_figure():
    calls: list[dict] = []

    @drawn_once
    def bars(source: dict, path: Path, scale: float = 1.0) -> Path | None:
        calls.append(source)
        if not source["values"]:
            return None
        figure, axis = plt.subplots(figsize=(2, 2))
        axis.bar(range(len(source["values"])), np.asarray(source["values"]) * scale)
        return save_figure(figure, path)

    return bars, calls


def test_equal_inputs_are_drawn_once_and_written_again_byte_for_byte(tmp_path: Path) -> None:
    bars, calls = _counting_figure()
    first = bars({"values": [1, 2, 3]}, tmp_path / "a.png")
    again = bars({"values": [1, 2, 3]}, tmp_path / "b.png")
    assert len(calls) == 1 and again == tmp_path / "b.png"
    assert again.read_bytes() == first.read_bytes() and first.read_bytes().startswith(b"\x89PNG")
    bars({"values": [1, 2, 4]}, tmp_path / "c.png")  # a changed value is a new figure
    bars({"values": [1, 2, 3]}, tmp_path / "d.png", scale=2.0)  # and so is a changed option
    assert len(calls) == 3
    assert (tmp_path / "c.png").read_bytes() != first.read_bytes()


def test_nothing_to_draw_is_remembered_and_writes_no_file(tmp_path: Path) -> None:
    bars, calls = _counting_figure()
    assert bars({"values": []}, tmp_path / "a.png") is None
    assert bars({"values": []}, tmp_path / "b.png") is None
    assert len(calls) == 1 and not list(tmp_path.iterdir())


def test_a_schema_argument_keys_by_its_content_and_the_memory_is_bounded(tmp_path: Path, monkeypatch) -> None:
    _, schema = load_dataset("whas500")
    calls = []

    @drawn_once
    def named(source: dict, path: Path, schema_) -> Path:
        calls.append(1)
        figure, axis = plt.subplots(figsize=(1, 1))
        axis.set_title(schema_.time_column)
        return save_figure(figure, path)

    named({}, tmp_path / "a.png", schema)
    named({}, tmp_path / "b.png", schema.model_copy(deep=True))
    assert len(calls) == 1
    monkeypatch.setattr(figures, "DRAWN_KEPT", 2)
    for value in range(3):
        named({"n": value}, tmp_path / f"n{value}.png", schema)
    assert len(figures._drawn) == 2
    named({}, tmp_path / "c.png", schema)  # evicted: drawn again
    assert len(calls) == 5


def test_an_input_without_stable_content_is_drawn_every_time(tmp_path: Path) -> None:
    bars, calls = _counting_figure()
    source = {"values": [1, 2], "tag": object()}
    bars(source, tmp_path / "a.png")
    bars(source, tmp_path / "b.png")
    assert len(calls) == 2 and (tmp_path / "b.png").exists()
