"""A site's privacy audits behind one interface: anonymeter's evaluator shape.

Each evaluator's constructor stores its inputs under anonymeter's names (``ori``: the site's
training rows, ``syn``: the synthetic rows, ``control``: its holdout, rows the model never saw);
``evaluate()`` runs the audit and returns the evaluator; ``risk()`` gives the headline figure with
its 95% confidence interval; ``results()`` gives every aggregate the site may send, and nothing
else. The audits themselves stay in their modules (:mod:`.membership`,
:mod:`.nearest_neighbour`, :mod:`.anonymeter_audit`), usable as functions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Self

import pandas as pd

from fedsynth.data.schema import Schema
from fedsynth.privacy.anonymeter_audit import AnonymeterSettings, Risk, anonymeter_audit
from fedsynth.privacy.membership import AttackResult, density_attack, distance_attack, white_box_attack
from fedsynth.privacy.nearest_neighbour import NearestNeighbourAudit, nearest_neighbour_audit

if TYPE_CHECKING:
    from fedsynth.model.generators import AnyGenerator


@dataclass(frozen=True)
class PrivacyRisk:
    """A headline figure and its 95% CI (anonymeter's ``PrivacyRisk`` has the same two fields)."""

    value: float
    ci: tuple[float, float]


class AuditEvaluator(ABC):
    """One privacy audit of synthetic rows against a site's real ones; see the module docstring."""

    name: str

    def __init__(self, ori: pd.DataFrame, syn: pd.DataFrame, control: pd.DataFrame, schema: Schema, seed: int = 0):
        self.ori, self.syn, self.control, self.schema, self.seed = ori, syn, control, schema, seed
        self._result: Any = None

    def evaluate(self) -> Self:
        """Run the audit (once; again re-runs it) and return the evaluator."""
        self._result = self._audit()
        return self

    @abstractmethod
    def _audit(self) -> Any: ...

    @property
    def result(self) -> Any:
        """The audit's own result object; evaluate() first (anonymeter refuses the same way)."""
        if self._result is None:
            raise RuntimeError(f"the {self.name} audit has not run: call evaluate() first")
        return self._result

    @abstractmethod
    def risk(self) -> PrivacyRisk: ...

    def results(self) -> Any:
        """Every aggregate the site sends for this audit (JSON-able)."""
        return self.result.to_dict()


class MembershipEvaluator(AuditEvaluator):
    """A black-box membership-inference attack (``"distance"`` or ``"density"``); risk: its AUC."""

    ATTACKS = {"distance": distance_attack, "density": density_attack}

    def __init__(self, ori: pd.DataFrame, syn: pd.DataFrame, control: pd.DataFrame, schema: Schema,
                 attack: str = "distance", seed: int = 0, delta: float | None = None):  # fmt: skip
        if attack not in self.ATTACKS:
            raise ValueError(f"unknown membership attack {attack!r}; choose one of {', '.join(self.ATTACKS)}")
        super().__init__(ori, syn, control, schema, seed)
        self.name, self.attack, self.delta = attack, attack, delta

    def _audit(self) -> AttackResult:
        return self.ATTACKS[self.attack](self.syn, self.ori, self.control, self.schema, self.seed, self.delta)

    def risk(self) -> PrivacyRisk:
        return PrivacyRisk(self.result.auc, self.result.auc_ci)


class WhiteBoxMembershipEvaluator(AuditEvaluator):
    """Membership inference from the released weights (the model's own masked loss); risk: its AUC.

    Reads the model, not synthetic rows: ``syn`` is None."""

    name = "white-box"

    def __init__(self, ori: pd.DataFrame, model: AnyGenerator, control: pd.DataFrame, schema: Schema, seed: int = 0,
                 delta: float | None = None):  # fmt: skip
        super().__init__(ori, None, control, schema, seed)  # type: ignore[arg-type]
        self.model, self.delta = model, delta

    def _audit(self) -> AttackResult:
        return white_box_attack(self.model, self.ori, self.control, seed=self.seed, delta=self.delta)

    def risk(self) -> PrivacyRisk:
        return PrivacyRisk(self.result.auc, self.result.auc_ci)


class NearestNeighbourEvaluator(AuditEvaluator):
    """Distance to closest record, synthetic against holdout; risk: the share of synthetic rows
    nearer to a training row than to a holdout row (0.5 for rows that copy no one)."""

    name = "nearest-neighbour"

    def _audit(self) -> NearestNeighbourAudit:
        return nearest_neighbour_audit(self.syn, self.ori, self.control, self.schema, self.seed)

    def risk(self) -> PrivacyRisk:
        return PrivacyRisk(self.result.dcr_share, self.result.dcr_share_ci)


class AnonymeterEvaluator(AuditEvaluator):
    """anonymeter's singling-out, linkability and inference evaluators; risk: the worst of them
    (the one with the highest upper CI bound), as a release gate reads them."""

    name = "anonymeter"

    def __init__(self, ori: pd.DataFrame, syn: pd.DataFrame, control: pd.DataFrame, schema: Schema,
                 settings: AnonymeterSettings | None = None):  # fmt: skip
        super().__init__(ori, syn, control, schema, seed=(settings or AnonymeterSettings()).seed)
        self.settings = settings

    def _audit(self) -> list[Risk]:
        return anonymeter_audit(self.syn, self.ori, self.control, self.schema, self.settings)

    def risk(self) -> PrivacyRisk:
        worst = max(self.result, key=lambda r: r.ci[1])
        return PrivacyRisk(worst.risk, worst.ci)

    def results(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.result]
