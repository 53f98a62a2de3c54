"""Pieces every section of the run report shares: a short exception text and the notes of an
incomplete site query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedsynth.release.html import Html, note
from fedsynth.release.rules import HOW_TO_MAKE, Document


def short(exc: Exception) -> str:
    """An exception as one bounded line of a note."""
    return f"{type(exc).__name__}: {exc}"[:200]


def site_query_notes(document: Document) -> list[Html]:
    """Incomplete queries: the sites that did not answer, so no reader takes the tables for all."""
    assert document.data is not None
    notes = [note(f"node {f.get('node_id')}: {f.get('reason')}", "warn") for f in document.data.get("failures") or []]
    if not document.data.get("complete"):
        notes.append(note(f"{document.name} is incomplete: not every site answered; "
                          f"{HOW_TO_MAKE[document.name]} again once every site is up", "warn"))  # fmt: skip
    return notes


def load_schema(run_dir: Path) -> tuple[Any, str | None]:
    """The run's public schema (figures on the columns' real scale), or None and why not."""
    if not (run_dir / "schema.toml").exists():
        return None, None
    from fedsynth.data.schema import Schema, SchemaError

    try:
        return Schema.from_toml(run_dir / "schema.toml"), None
    except SchemaError as exc:
        return None, f"schema.toml unreadable ({short(exc)}): histograms on bin numbers"
