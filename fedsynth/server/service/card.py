"""The model card: what a researcher needs to judge a cohort before using it.

Read from the run directory at each request, so an audit or evaluation finished after the
service started shows up without a restart. Results computed for another checkpoint than
the one served are shown but flagged (``matches_model: false``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsynth.server.audit import AUDIT_FILE
from fedsynth.server.budget import budget_report
from fedsynth.server.evaluation import EVALUATION_FILE
from fedsynth.server.service.models import ModelCard, Privacy, ResultSummary, SitePrivacy
from fedsynth.server.service.release_status import release_status
from fedsynth.server.service.sampling import CHUNK_ROWS
from fedsynth.server.service.served import ServedModel


def _privacy(served: ServedModel) -> tuple[Privacy, str | None]:
    """Per-site spend from the run's budget record (never from a second tally), and the run id."""
    base = {"differentially_private": served.differentially_private, "notice": served.notice}
    try:
        report = budget_report(served.run_dir)
    except FileNotFoundError:
        return Privacy(**base, note=f"{served.run_dir} has no run.json, so no budget record to report"), None
    # Site sizes stay out: they are exact counts of each site's patients, not needed to use a cohort.
    sites = [
        SitePrivacy(
            site=site["site"],
            target_epsilon=site["target_epsilon"],
            epsilon_spent=site["epsilon_spent"],
            delta=site["delta"],
            rounds_trained=len(site["rounds"]),
            within_budget=site["within_budget"],
        )
        for site in report["sites"]
    ]
    privacy = Privacy(
        **base,
        sites=sites,
        epsilon=max((s.epsilon_spent for s in sites), default=None),
        delta=max((s.delta for s in sites), default=None),
        accountant=report["sites"][0]["accountant"] if report["sites"] else None,
        note=report["note"],
    )
    return privacy, report["run_id"]


def _summary(path: Path, weights_sha256: str) -> ResultSummary | None:
    if not path.exists():
        return None
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return ResultSummary(
            time=document.get("time"),
            complete=bool(document["complete"]),
            # The sites name a model by what determines its samples (fedsynth.model.persistence.generator_digest).
            matches_model=document.get("model_sha256") == weights_sha256,
            worst=document.get("worst"),
            failures=len(document.get("failures", [])),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return ResultSummary(complete=False, matches_model=False, error=f"{path.name} is unreadable: {exc}")


def model_card(served: ServedModel, max_rows_per_request: int) -> ModelCard:
    info = served.model.training_info_
    privacy, run_id = _privacy(served)
    sites = list(info.get("sites") or [site.site for site in privacy.sites])
    return ModelCard(
        run_id=run_id,
        generator=f"{served.model.title}, model-only conditional sampling",
        model_sha256=served.sha256,
        weights_sha256=served.weights_sha256,
        rounds=info.get("round"),
        sites=sites,
        privacy=privacy,
        audit=_summary(served.run_dir / AUDIT_FILE, served.weights_sha256),
        evaluation=_summary(served.run_dir / EVALUATION_FILE, served.weights_sha256),
        max_rows_per_request=max_rows_per_request,
        chunk_rows=CHUNK_ROWS,
        release=release_status(served.run_dir, served.sha256),
    )
