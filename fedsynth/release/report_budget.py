"""The report's privacy-budget section: each site's spend, its refusals and epsilon per round, and
the split of each site's epsilon between its DP marginal tables and its DP-SGD training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsynth.release.html import Html, figure, note, number, section, table, tag
from fedsynth.release.report_parts import short
from fedsynth.release.rules import Document, load_document
from fedsynth.server.budget import SPEND_STATUSES

EPSILON_DELTA = (
    "What ε and δ mean: whatever is released, any one patient's being in a site's data or not changes the "
    "probability of any result by at most a factor e^ε (e^1 ≈ 2.7, e^4 ≈ 55), except with probability δ. Smaller is "
    "more private. δ × n, δ times the site's records, is about how many patients the exception could hit: it "
    "should be well under 1."
)
SPLIT_NOTE = (
    "Each site spends its budget on the same patients twice: once, before training, on noisy counts of every "
    "column (the DP marginal tables the sampler is calibrated to), then on DP-SGD training. The accountant (Rényi "
    "DP) composes the two: the composed ε, which the ledger reports and the target bounds, is less than the sum of "
    "the ε's taken alone. After training, a model with a hazard survival head also spends one small release on its "
    "calibration slope (the sum of each patient's clipped slope score plus noise), counted in the composed ε."
)
SPLIT_HEADERS = ["site", "ε marginal tables alone", "ε DP-SGD alone", "ε slope release alone", "ε composed (ledger)",
                 "sum of those alone", "marginal-table noise multiplier", "planned marginals share"]  # fmt: skip
RELEASES = ("marginals", "head-slope")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn line: the summary's figures stand in
    return [r for r in records if isinstance(r, dict)]


def _training_history(site: dict[str, Any], records: list[dict[str, Any]]) -> list[tuple[float, float, int]]:
    """The site's DP-SGD steps [(noise multiplier, sample rate, steps)]: per round from budget.jsonl,
    else the summary's (one noise multiplier and rate for every step)."""
    rounds = [
        (float(r["noise-multiplier"]), float(r["sample-rate"]), int(r["steps"]))
        for r in records
        if r.get("site") == site.get("site")
        and r.get("status") in SPEND_STATUSES
        and r.get("mechanism") not in RELEASES
    ]
    if rounds:
        return rounds
    steps = site.get("steps")
    return [(float(site["noise_multiplier"]), float(site["sample_rate"]), int(steps))] if steps else []


def _marginal_noise(site: dict[str, Any], released: dict[str, Any]) -> float | None:
    """The noise multiplier of the site's marginal tables: budget.json, else RUN_DIR/marginals.json."""
    for entry in site.get("marginals") or []:
        return float(entry["noise_multiplier"])
    entry = released.get(site.get("site"))
    return float(entry["noise_multiplier"]) if entry else None


def _share(run_dir: Path) -> str:
    """privacy.marginals_share as the coordinator knows it."""
    from fedsynth.client.config import PrivacyConfig

    run = load_document(run_dir, "run.json").data or {}
    configured = ((((run.get("config") or {}).get("site") or {}).get("privacy")) or {}).get("marginals_share")
    if configured is not None:
        return f"{configured:g} (this run's site configuration)"
    return f"{PrivacyConfig().marginals_share:g} by default (a site's site.toml may set another)"


def split_rows(data: dict[str, Any], run_dir: Path) -> list[list[object]]:
    """Per site: epsilon of the marginal tables alone, of DP-SGD alone, of the slope release alone,
    and composed."""
    from fedsynth.client.rdp import rdp_epsilon

    records = _jsonl(run_dir / "budget.jsonl")
    released = load_document(run_dir, "marginals.json").data or {}
    by_site = {s.get("site"): s for s in released.get("sites") or []}
    share = _share(run_dir)
    rows: list[list[object]] = []
    for site in data.get("sites") or []:
        delta = float(site["delta"])
        noise = _marginal_noise(site, by_site)
        # One Gaussian release of every table: one step at sample rate 1.
        alone = rdp_epsilon([(noise, 1.0, 1)], delta) if noise is not None else None
        training = rdp_epsilon(_training_history(site, records), delta)
        slopes = [float(e["noise_multiplier"]) for e in site.get("head_slope") or []]
        slope = rdp_epsilon([(z, 1.0, 1) for z in slopes], delta) if slopes else None
        total = sum(e for e in (alone, training, slope) if e is not None)
        rows.append([site.get("site"), "none released" if alone is None else number(alone, 4), number(training, 4),
                     "none released" if slope is None else number(slope, 4), number(site.get("epsilon_spent"), 4),
                     number(total, 4), number(noise, 4), share])  # fmt: skip
    return rows


def calibration_line(run_dir: Path) -> Html:
    """Whether the released model's samples are calibrated to the DP tables."""
    from fedsynth.model.persistence import MARGINALS

    if (run_dir / "model" / MARGINALS).exists():
        return note(f"The published model carries the DP marginal tables (model/{MARGINALS}): its samples are "
                    "calibrated to them, post-processing of DP releases only.")  # fmt: skip
    return note(f"The published model carries no DP marginal tables (no model/{MARGINALS}): its samples come from "
                "the generator alone, not calibrated to any DP tables.")  # fmt: skip


def budget_section(budget: Document, run_dir: Path, workdir: Path) -> Html:
    from fedsynth.privacy.plots import budget_figure

    if budget.data is None:
        return section("Privacy budget", note(budget.problem, "warn"), id_="budget")
    sites = budget.data.get("sites") or []
    rows = [
        [
            s.get("site"),
            s.get("records"),
            number(s.get("target_epsilon")),
            number(s.get("epsilon_spent"), 4),
            number(s.get("remaining_epsilon")),
            number(s.get("delta")),
            number(s["delta"] * s["records"]) if "delta" in s and "records" in s else "n/a",
            s.get("accountant", "n/a"),
            number(s.get("noise_multiplier"), 4),
            number(s.get("sample_rate")),
            s.get("steps"),
        ]
        for s in sites
    ]
    headers = ["site", "records", "target ε", "spent ε", "remaining ε", "δ", "δ × n", "accountant", "noise multiplier",
               "sample rate", "steps"]  # fmt: skip
    parts: list[object] = [table(headers, rows, numeric=(1, 2, 3, 4, 5, 6, 8, 9, 10)), note(EPSILON_DELTA)]
    parts += [
        tag("h3", "Budget split: DP marginal tables and DP-SGD"),
        table(SPLIT_HEADERS, split_rows(budget.data, run_dir), numeric=(1, 2, 3, 4, 5, 6)),
        note(SPLIT_NOTE),
        calibration_line(run_dir),
    ]
    for refusal in budget.data.get("refusals") or []:
        parts.append(note(f"round {refusal.get('round')}, {refusal.get('site')}: {refusal.get('status')}: "
                          f"{refusal.get('reason')}", "warn"))  # fmt: skip
    if budget.data.get("note"):
        parts.append(note(budget.data["note"]))
    try:
        parts.append(figure(budget_figure(budget.data, workdir / "budget.png"), "Cumulative epsilon per round"))
    except (KeyError, TypeError, ValueError) as exc:
        parts.append(note(f"epsilon-per-round figure not drawn: {short(exc)}", "warn"))
    return section("Privacy budget", *parts, id_="budget")
