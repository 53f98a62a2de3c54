"""Whether a training run did what it was asked, read from its run directory, and why not.

Flower's strategy ends a round in which no site returned weights by keeping the old global
model, and the run "completes" even when every round did so. ``fedsynth train`` must not then
report a model: :func:`check_training_outcome` turns a run that did not reach its last round
with weights into an error listing each site's reason (as the site worded it for the
coordinator, :mod:`fedsynth.client.site_errors`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fedsynth.client.site_errors import site_reason
from fedsynth.server.run import RunDirectory


class TrainingFailedError(ValueError):
    """The run ended without the model it was asked for; the message gives the sites' reasons."""


def rounds_done(run_dir: Path) -> int:
    """The last round with a checkpoint in ``run_dir`` (0 for none, or no run yet)."""
    if not (Path(run_dir) / "run.json").exists():
        return 0
    checkpoint = RunDirectory(run_dir).latest_checkpoint()
    return checkpoint.round if checkpoint else 0


def _rounds_text(rounds: list[int]) -> str:
    return f"round {rounds[0]}" if len(rounds) == 1 else f"rounds {', '.join(map(str, rounds))}"


def site_failures(records: list[dict[str, Any]], first_round: int) -> list[str]:
    """One line per site and reason for the budget ``records`` since ``first_round`` that brought no weights."""
    grouped: dict[tuple[str, str], list[int]] = {}
    for record in records:
        if record.get("round", 0) < first_round or record.get("status") == "ok":
            continue
        text = site_reason(str(record.get("reason", record.get("status", "no reason given"))))
        # A site that never replied with weights is known to the strategy by node id only; its
        # message names it (site_errors' messages begin "<site>: ", budget refusals "site '<site>'").
        named = re.match(r"site '([^']+)'|([A-Za-z0-9_.-]+): ", text)
        who = str(record.get("site") or (named and (named.group(1) or named.group(2))) or "")
        who = who or f"node {record.get('node_id', '?')}"
        text = "\n".join(line.removeprefix(f"{who}: ") for line in text.splitlines())
        grouped.setdefault((who, text), []).append(int(record["round"]))
    lines = []
    for (who, text), rounds in sorted(grouped.items()):
        body = text.replace("\n", "\n      ")
        lines.append(f"  - {who} ({_rounds_text(sorted(set(rounds)))}): {body}")
    return lines


def check_training_outcome(run_dir: Path, first_round: int, planned_rounds: int, logs: Path) -> None:
    """Raise :class:`TrainingFailedError` unless the run's last planned round produced weights."""
    done = rounds_done(run_dir)
    if done >= planned_rounds:
        return
    records = RunDirectory(run_dir).budget_records()
    failures = site_failures(records, first_round)
    model = Path(run_dir) / "model"
    if done == 0:
        kept = f"No model was published ({model} does not exist)."
    else:
        kept = f"{model} is still round {done}'s model."
    ended = "training ended without a model" if done == 0 else f"training ended at round {done} of {planned_rounds}"
    answered = [
        r for r in records if r.get("status") == "ok" and r.get("round", 0) > done and r.get("round", 0) >= first_round
    ]
    if answered:  # weights came, from fewer sites than a round needs (the strategy's quorum)
        what = "fewer sites than federation.min_sites returned weights" + (f" after round {done}" if done else "")
        said = "The other sites replied:\n" + "\n".join(failures) if failures else "No other site replied."
    elif failures:
        what = "no site returned weights" + (f" after round {done}" if done else "")
        said = "The sites replied:\n" + "\n".join(failures)
    else:
        what = "no round finished"
        said = "No site replied."
    raise TrainingFailedError(
        f"{ended}: {what}. {said}\n{kept} "
        f"Flower's and Ray's log: {logs}. Fix the cause and run the same command again: the run resumes "
        "(the sites' privacy ledgers keep whatever they spent)."
    )
