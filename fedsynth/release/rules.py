"""Each sign-off rule: read its evidence from the run directory, compare with its threshold.

A rule whose evidence is missing, unreadable or incomplete FAILS and says which file and why:
a release decision with a site's evidence absent would be a guess about that site's patients.
A rule whose evidence is there but lacks the power to tell (a withheld measurement, a CI or a
noise floor wider than the policy allows) is INCONCLUSIVE, and says what would give it power.
Every result carries the value tested, the threshold and the comparison, so a board reads why.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from fedsynth.release.binding import (
    SYNTHETIC_NAMES,
    ReleaseFile,
    audit_binding_problems,
    evaluation_size_problems,
    synthetic_file,
)
from fedsynth.release.policy import Policy

__all__ = ["SYNTHETIC_NAMES", "synthetic_file"]  # read from here by the bundle and the report

AUDIT, EVALUATION, BUDGET = "audit.json", "evaluation.json", "budget.json"
# Rules whose value is computed from DP accounting alone; the others read real rows at the sites.
DP_RULES = frozenset({"max_epsilon", "delta_below_1_over_n", "site_approvals"})
HOW_TO_MAKE = {
    AUDIT: "run `fedsynth audit RUN_DIR`",
    EVALUATION: "run `fedsynth evaluate RUN_DIR`",
    BUDGET: "run `fedsynth budget RUN_DIR`",
}
COMPARE: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}


Outcome = Literal["PASS", "FAIL", "INCONCLUSIVE"]
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


def outcome_fields(data: Any) -> Any:
    """``outcome`` and ``passed`` agree (passed only for PASS); either one may be given: records
    written before INCONCLUSIVE existed carry ``passed`` alone."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if data.get("outcome") is None:
        data["outcome"] = PASS if data.get("passed") else FAIL
    elif "passed" not in data:
        data["passed"] = data["outcome"] == PASS
    elif bool(data["passed"]) != (data["outcome"] == PASS):
        raise ValueError(f"passed={data['passed']} contradicts outcome {data['outcome']}")
    return data


class RuleResult(BaseModel):
    """One rule's outcome: the value tested, its threshold, PASS/FAIL/INCONCLUSIVE and why.

    ``power``: for an INCONCLUSIVE rule, what evidence would let it decide."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float | int | str | None
    threshold: str
    passed: bool
    outcome: Outcome
    reason: str
    power: str | None = None

    _agree = model_validator(mode="before")(outcome_fields)

    def with_outcome(self, outcome: Outcome, reason: str, power: str | None = None) -> RuleResult:
        """This result with another outcome and reason (``passed`` kept consistent)."""
        update = {"outcome": outcome, "passed": outcome == PASS, "reason": reason, "power": power}
        return self.model_copy(update=update)


@dataclass(frozen=True)
class Document:
    """A JSON document of the run, or why it cannot be used."""

    name: str
    data: dict[str, Any] | None
    problem: str | None


def load_document(run_dir: Path, name: str) -> Document:
    path = run_dir / name
    if not path.exists():
        return Document(name, None, f"{name} is missing: {HOW_TO_MAKE.get(name, 'create it')}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return Document(name, None, f"{name} is not valid JSON ({exc}); re-create it")
    if not isinstance(data, dict):
        return Document(name, None, f"{name} is not a JSON object; re-create it")
    return Document(name, data, None)


def load_site_query(run_dir: Path, name: str) -> Document:
    """audit.json or evaluation.json, usable only if every site answered (then it has a worst block)."""
    document = load_document(run_dir, name)
    if document.data is None:
        return document
    if not document.data.get("complete") or not document.data.get("worst"):
        failures = "; ".join(f"node {f.get('node_id')}: {f.get('reason')}" for f in document.data.get("failures", []))
        problem = f"{name} is incomplete (not every site answered{': ' + failures if failures else ''})"
        return Document(name, None, problem + f"; {HOW_TO_MAKE[name]} again once every site is up")
    return document


def failed(name: str, threshold: str, reason: str) -> RuleResult:
    return RuleResult(name=name, value=None, threshold=threshold, outcome=FAIL, reason=reason)


def compare(name: str, value: float | None, op: str, threshold: float, what: str) -> RuleResult:
    """``value op threshold``; a missing or non-finite value fails (nothing was measured)."""
    shown = f"{op} {threshold:g}"
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return failed(name, shown, f"{what}: no value in the evidence")
    passed = COMPARE[op](value, threshold)
    verb = "within" if passed else "outside"
    return RuleResult(
        name=name, value=value, threshold=shown, passed=passed, reason=f"{what} {value:.4g} {verb} {shown}"
    )


def worst_figure(document: Document, key: str) -> tuple[Any, str | None]:
    """A figure of the document's worst-site block, or why there is none."""
    if document.data is None:
        return None, document.problem
    worst = document.data["worst"]
    if key not in worst:
        return None, f"{document.name} has no worst.{key}; re-run it with this fedsynth version"
    return worst[key], None


# -- budget: the formal DP guarantee ----------------------------------------------------------------


def budget_rules(budget: Document, policy: Policy) -> list[RuleResult]:
    rules = policy.budget
    eps_shown, delta_shown = f"<= {rules.max_epsilon:g}", f"< {rules.max_delta_times_n:g}"
    problem = budget.problem
    sites = budget.data.get("sites") if budget.data is not None else None
    if problem is None and not sites:
        problem = f"{BUDGET} lists no site that trained; nothing bounds this release's privacy loss"
    if problem is not None:
        return [failed("max_epsilon", eps_shown, problem), failed("delta_below_1_over_n", delta_shown, problem)]
    try:
        spent = {s["site"]: float(s["epsilon_spent"]) for s in sites}
        delta_n = {s["site"]: float(s["delta"]) * int(s["records"]) for s in sites}
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"{BUDGET} has a site entry without {exc}; re-create it with `fedsynth budget RUN_DIR`"
        return [failed("max_epsilon", eps_shown, reason), failed("delta_below_1_over_n", delta_shown, reason)]
    eps_site = max(spent, key=spent.__getitem__)
    delta_site = max(delta_n, key=delta_n.__getitem__)
    return [
        compare("max_epsilon", spent[eps_site], "<=", rules.max_epsilon, f"epsilon spent at {eps_site}"),
        compare(
            "delta_below_1_over_n", delta_n[delta_site], "<", rules.max_delta_times_n, f"delta x n at {delta_site}"
        ),
    ]


# -- the evidence is about this run's model and covers every site, and the file is what was audited ----


def evidence_rule(
    run_dir: Path, budget: Document, audit: Document, evaluation: Document, release: ReleaseFile | str
) -> RuleResult:
    """audit.json and evaluation.json are of RUN_DIR/model and cover every site that trained; the
    run's records show that model DP (not its own flag); ``release`` (the checked synthetic file,
    or why it was refused) regenerates from it and holds exactly the rows the sites audited, and
    the sites evaluated samples of its size."""
    from fedsynth.model.generators import generator_digest, load_generator
    from fedsynth.model.persistence import ModelFileError
    from fedsynth.server.evidence import dp_evidence

    name, shown = "evidence", "same model, every site, the audited rows"
    try:
        model = load_generator(run_dir / "model")
    except ModelFileError as exc:
        return failed(name, shown, str(exc))
    problems = []
    dp = dp_evidence(run_dir / "model", model)
    if not (dp.differentially_private and model.differentially_private_):
        problems.append(f"RUN_DIR/model is not shown to be trained with DP ({dp.reason})")
    digest = generator_digest(model)
    trained = {s["site"] for s in (budget.data or {}).get("sites", [])}
    for document in (audit, evaluation):
        if document.data is None:
            problems.append(document.problem or document.name)
            continue
        if document.data.get("model_sha256") != digest:
            problems.append(f"{document.name} is of another model than RUN_DIR/model (model_sha256 differs)")
        answered = {s["site"] for s in document.data["sites"]}
        if trained - answered:
            problems.append(f"{document.name} has no result from {', '.join(sorted(trained - answered))}")
    if isinstance(release, str):
        problems.append(release)
    else:
        if not release.record.get("differentially_private"):
            problems.append(f"{release.path.name} is not labelled a DP model sample ({release.record.get('notice')})")
        if audit.data is not None:
            problems += audit_binding_problems(audit.data, release)
        if evaluation.data is not None:
            problems += evaluation_size_problems(evaluation.data, release)
    if problems:
        return failed(name, shown, "; ".join(problems))
    assert not isinstance(release, str)
    return RuleResult(
        name=name,
        value=f"{len(trained)} sites",
        threshold=shown,
        passed=True,
        reason=f"audit, evaluation and {release.path.name} are of RUN_DIR/model ({dp.reason}); every site "
        f"answered, audited the very rows {release.path.name} holds (n={release.record['n']}, "
        f"seed={release.record['seed']}) and evaluated samples of its size",
    )


def approvals_rule(policy: Policy, budget: Document) -> RuleResult:
    sites = sorted(s["site"] for s in (budget.data or {}).get("sites", []))
    if not policy.release.require_site_approvals:
        return RuleResult(
            name="site_approvals", value="not required", threshold="none", passed=True, reason="not required"
        )
    return RuleResult(
        name="site_approvals",
        value=f"required of {len(sites)} sites",
        threshold="every site",
        passed=True,
        reason=f"{', '.join(sites)} must each sign the bundle (`fedsynth release approve`); `fedsynth verify` checks",
    )
