"""The DP marginal tables a model's samples are calibrated to, and where they came from.

A :class:`MarginalTarget` is the coordinator's consistent sum of the sites' noisy tables
(``RUN_DIR/marginals.json``) with the spec they were binned on: post-processing of DP releases,
each site's release in its own ledger. A model that carries one samples through
:func:`fedsynth.marginals.calibration.calibrate`; it travels with the model (``marginals.json``
in the model directory, under the manifest's hashes) and to the sites with the weights, so that
the rows sites audit and the rows a release holds are drawn the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.data.conditions import ResolvedCondition
from fedsynth.data.schema import Schema
from fedsynth.errors import UserError
from fedsynth.marginals.calibration import calibrate
from fedsynth.marginals.tables import MarginalSpec, tables_from_json, tables_to_json

FORMAT = "fedsynth-marginal-target/1"
# Candidates drawn from the model per calibrated row. Marginals do not depend on it (quantile
# mapping); more candidates let raking reach rare levels without repeating rows, at the model's
# sampling cost per candidate.
CANDIDATE_MULTIPLE = 2
# At least this many candidates per group: a small sample (one row from the service) is still
# drawn from a weighted pool fine enough to have the target's marginal.
MIN_CANDIDATES = 2048


class MarginalTargetError(UserError, ValueError):
    """A marginal target is unreadable or does not fit the model's schema."""


@dataclass(frozen=True)
class MarginalTarget:
    """Consistent DP tables (``tables``) on ``spec``'s bins; ``source``: run id, sites, epsilons."""

    spec: MarginalSpec
    tables: dict[str, np.ndarray]
    source: dict[str, Any] = field(default_factory=dict)
    candidate_multiple: int = CANDIDATE_MULTIPLE

    def n_candidates(self, n: int) -> int:
        return max(self.candidate_multiple * n, MIN_CANDIDATES)

    def calibrate(
        self,
        candidates: pd.DataFrame,
        n: int,
        seed: int,
        conditions: list[ResolvedCondition] | None = None,
        redraw_outcome: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    ) -> pd.DataFrame:
        """``n`` rows of ``candidates`` (canonical, from the model) calibrated to the tables
        (``redraw_outcome``: see :func:`fedsynth.marginals.calibration.calibrate`)."""
        return calibrate(
            candidates, self.tables, self.spec, n, seed, conditions=conditions, redraw_outcome=redraw_outcome
        )

    def event_share(self) -> float | None:
        """The event's share of rows, from the first table that crosses the event column (the
        consistent tables agree on it); None without one, or an empty one."""
        event = self.spec.event_column
        for table in self.spec.tables:
            counts = self.tables.get(table.name)
            if event in table.columns and counts is not None:
                axes = tuple(i for i, c in enumerate(table.columns) if c != event)
                levels = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None).sum(axis=axes)[:2]
                return float(levels[1] / levels.sum()) if levels.sum() > 0 else None
        return None

    # -- files ------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "spec": self.spec.to_dict(),
                "tables": json.loads(tables_to_json(self.tables)),
                "source": self.source,
                "candidate_multiple": self.candidate_multiple,
            },
            sort_keys=True,
        )

    def digest(self) -> str:
        """SHA-256 of the canonical JSON: names exactly what samples are calibrated to."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str, schema: Schema, where: str = "marginal target") -> MarginalTarget:
        """Read and check a target against the model's ``schema``; errors name ``where``."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r} is not {FORMAT!r}")
            spec = MarginalSpec.from_dict(data["spec"])
            tables = tables_from_json(json.dumps(data["tables"]), spec)
            multiple = int(data.get("candidate_multiple", CANDIDATE_MULTIPLE))
            source = dict(data.get("source", {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MarginalTargetError(f"{where}: unreadable ({exc})") from None
        if spec.schema.to_dict() != schema.to_dict():
            raise MarginalTargetError(f"{where}: its tables are binned on another schema than the model's")
        if multiple < 1:
            raise MarginalTargetError(f"{where}: candidate_multiple must be >= 1, got {multiple}")
        if any((t < 0).any() for t in tables.values()):
            raise MarginalTargetError(f"{where}: negative counts; only consistent (post-processed) tables are used")
        return cls(spec, tables, source, multiple)

    @classmethod
    def from_run_document(cls, document: dict[str, Any]) -> MarginalTarget | None:
        """The target of a run's ``marginals.json``; None when its release is incomplete (some
        site's tables missing: their sum would describe part of the federation only)."""
        if not document.get("complete") or not document.get("consistent_tables"):
            return None
        spec = MarginalSpec.from_dict(document["spec"])
        tables = tables_from_json(json.dumps(document["consistent_tables"]), spec)
        source = {
            "run_id": document.get("run_id"),
            "spec_sha256": document.get("spec_sha256"),
            "sites": [
                {k: s[k] for k in ("site", "epsilon", "noise_multiplier") if k in s} for s in document.get("sites", [])
            ],
        }
        return cls(spec, tables, source)
