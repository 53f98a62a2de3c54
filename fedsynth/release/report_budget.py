"""The report's privacy-budget section: each site's spend, its refusals and epsilon per round."""

from __future__ import annotations

from pathlib import Path

from fedsynth.release.html import Html, figure, note, number, section, table
from fedsynth.release.report_parts import short
from fedsynth.release.rules import Document


def budget_section(budget: Document, workdir: Path) -> Html:
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
    parts: list[object] = [table(headers, rows, numeric=(1, 2, 3, 4, 5, 6, 8, 9, 10))]
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
