"""What `fedsynth demo` shows: one status line per phase, a few tables that fit 80 columns.

Everything else (Flower's, Ray's and the other libraries' logs and warnings) goes to the run's
log file; the figures behind each line are in the run directory and its report.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table

OUTCOME_STYLES = {"PASS": "green", "FAIL": "bold red", "INCONCLUSIVE": "yellow"}


class DemoReporter:
    """Prints the demo's progress to ``console`` and keeps each phase's wall time."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str, doing: str) -> Iterator[None]:
        """A spinner while the phase runs; its time is kept under ``name``."""
        started = time.perf_counter()
        # No stdout redirection: library output inside the phase belongs to the log file.
        spinner = Spinner("dots", f"{name}: {escape(doing)}")
        with Live(spinner, console=self.console, transient=True, redirect_stdout=False, redirect_stderr=False):
            try:
                yield
            finally:
                self.seconds[name] = round(time.perf_counter() - started, 1)

    def done(self, name: str, text: str) -> None:
        """The phase's one line: what it found, and how long it took."""
        self.console.print(f"[green]✓[/] [bold]{name}[/] ({self.seconds.get(name, 0):.0f} s): {text}")

    def line(self, text: str) -> None:
        self.console.print(text)

    def table(self, table: Table) -> None:
        self.console.print(table)


def compact_table(title: str, headers: tuple[str, ...]) -> Table:
    """A table with one header rule and no borders: three sites take five lines."""
    table = Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left", pad_edge=False, show_edge=False
    )
    for header in headers:
        # Two-word headers on two lines: nine columns fit 80.
        wrapped = header if header in ("site", "rule", "threshold") else header.replace(" ", "\n", 1)
        table.add_column(wrapped, justify="left" if header in ("site", "rule", "threshold") else "right")
    return table


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def budget_line(report: dict[str, Any]) -> str:
    """Each site's spend in one line (the table is in budget.json and the report)."""
    sites = report["sites"]
    spent = ", ".join(f"{s['site']} {s['epsilon_spent']:.2f}" for s in sites)
    targets = {f"{s['target_epsilon']:g}" for s in sites}
    marginal = [m["epsilon_step"] or 0.0 for s in sites for m in s.get("marginals", [])]
    tables = f" (tables {max(marginal):.2f})" if marginal else ""
    return f"epsilon spent (target {'/'.join(sorted(targets))}): {spent}{tables}"


def site_table(audit: dict[str, Any], evaluation: dict[str, Any]) -> Table:
    """Per site: the audit's and the evaluation's headline figures (aggregates the sites returned)."""
    table = compact_table(
        "Per site (aggregates the sites returned; C: Cox on real/synth rows)",
        ("site", "holdout", "DCR share", "exact", "MIA AUC", "Anon. risk", "mean KS", "C real", "C synth"),
    )
    evaluations = {site["site"]: site for site in evaluation.get("sites", [])}
    for site in audit.get("sites", []):
        scores = evaluations.get(site["site"], {})
        models = scores.get("models", {})

        def uno(model: str, models: dict[str, Any] = models) -> str:
            return _number(models.get(model, {}).get("discrimination", {}).get("uno_c"))

        table.add_row(
            site["site"],
            str(site["n_holdout"]),
            _number(site["nearest_neighbour"]["dcr_share"]),
            str(site["nearest_neighbour"]["exact_matches"]),
            _number(max(a["auc"] for a in site["attacks"])),
            _number(max((r["risk"] for r in site["anonymeter"]), default=0.0)),
            _number(scores.get("fidelity", {}).get("mean_ks")),
            uno("trtr"),
            uno("tstr"),
        )
    return table


def outcome_of(item: Any) -> str:
    """PASS / FAIL / INCONCLUSIVE of a verdict or rule (a verdict without outcomes: PASS or FAIL)."""
    outcome = getattr(item, "outcome", None)
    return str(getattr(outcome, "value", outcome)) if outcome else ("PASS" if item.passed else "FAIL")


def verdict_table(verdict: Any) -> Table:
    """Each rule's value, threshold and outcome; the reasons are in signoff.json and the report."""
    table = compact_table(f"Sign-off under policy '{verdict.policy}'", ("rule", "value", "threshold", "outcome"))
    table.columns[0].max_width = 26
    table.columns[2].max_width = 20
    for column in (table.columns[0], table.columns[2]):
        column.no_wrap, column.overflow = True, "ellipsis"
    for rule in verdict.rules:
        value = f"{rule.value:.4g}" if isinstance(rule.value, float) else str(rule.value)
        outcome = outcome_of(rule)
        style = OUTCOME_STYLES.get(outcome, "")
        table.add_row(rule.name, value[:12], rule.threshold, f"[{style}]{outcome}[/]" if style else outcome)
    return table


def verdict_line(verdict: Any) -> str:
    """One line: the verdict and the rules that decided it."""
    outcome = outcome_of(verdict)
    style = OUTCOME_STYLES.get(outcome, "bold")
    others = [rule.name for rule in verdict.rules if outcome_of(rule) == outcome and outcome != "PASS"]
    detail = f" ({', '.join(others)})" if others else f": every rule of '{verdict.policy}' holds"
    return f"[{style}]verdict {outcome}[/]{detail}"
