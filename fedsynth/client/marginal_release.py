"""A site's once-per-run release of Gaussian-noised marginal tables of its training rows.

The tables (every column's 1-way histogram and each covariate x time bin x event, on the public
schema's bins: :class:`fedsynth.marginals.tables.MarginalSpec`) get independent Gaussian noise
of std ``z * sqrt(#tables)``: one record changes one cell of each table, so this is one Gaussian
mechanism of noise multiplier ``z`` on the L2 sensitivity, one step at sample rate 1 in the same
RDP ledger as DP-SGD. ``z`` comes from the run's plan (:meth:`fedsynth.client.site.Site.plan`),
made with the DP-SGD noise so that the two together stay within the site's target.

Order of events, so that accounting never under-counts: the step is reserved in the ledger
(synced), then the noise is drawn, then the noisy tables are stored in
``runs/<run id>/marginals.json`` and only then sent. A second request in the run gets the stored
tables (no new spend); a reservation whose tables were never stored (a crash in between) is
refused rather than released again, since the plan left room for one release only.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedsynth.client.ledger import BudgetExceededError
from fedsynth.client.rdp import rdp_epsilon
from fedsynth.client.site import Site
from fedsynth.client.site_files import MARGINALS_FILE, MARGINALS_ROUND, RUNS_DIR
from fedsynth.data.io import write_text
from fedsynth.marginals.tables import (
    MarginalSpec,
    add_gaussian_noise,
    count_tables,
    tables_from_json,
    tables_to_json,
)

MAX_BINS = 64  # a coordinator's bin request is bounded: more bins, thinner cells, no more privacy cost


class MarginalsRefusedError(RuntimeError):
    """The site will not release marginal tables in this run; the text names the site and why (no data)."""


@dataclass(frozen=True)
class MarginalRelease:
    """What leaves the site: the noisy tables, the spec's fingerprint and scalar privacy figures."""

    site: str
    spec_sha256: str
    tables: str  # tables_to_json of the noisy tables
    noise_multiplier: float
    epsilon_step: float  # this release alone, at the site's delta
    epsilon: float  # the site's ledger after it (everything composed)
    target_epsilon: float
    delta: float

    def to_result(self) -> dict[str, Any]:
        return asdict(self)


RESULT_KEYS = frozenset(MarginalRelease.__dataclass_fields__)


def spec_fingerprint(spec: MarginalSpec) -> str:
    """SHA-256 of the spec's canonical JSON: sites and coordinator must bin alike for a sum to mean anything."""
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()


def release_marginals(
    site: Site,
    *,
    run_id: str,
    planned_rounds: int,
    numeric_bins: int,
    time_bins: int,
    coordinator_floor: float = 0.0,
    expected_spec_sha256: str | None = None,
    head_slope: bool = False,
) -> MarginalRelease:
    """The run's noisy tables of ``site``'s training rows: released once, then read back.

    ``expected_spec_sha256`` is the coordinator's spec: a site whose schema bins differently
    refuses before spending anything, since the coordinator could not use its tables.
    ``head_slope``: the run will ask for the slope release at its end (see ``Site.plan``).
    """
    name = site.config.name
    if not (2 <= numeric_bins <= MAX_BINS and 2 <= time_bins <= MAX_BINS):
        raise MarginalsRefusedError(
            f"site '{name}': marginal bins must be 2..{MAX_BINS}, got numeric {numeric_bins}, time {time_bins}"
        )
    if coordinator_floor > 0:
        site.ledger.require_at_least(coordinator_floor, f"site '{name}': the coordinator of run '{run_id}'")
    # Built from the site's own public schema: the coordinator chooses only the two bin counts.
    spec = MarginalSpec.from_schema(site.schema, numeric_bins=numeric_bins, time_bins=time_bins)
    fingerprint = spec_fingerprint(spec)
    if expected_spec_sha256 is not None and expected_spec_sha256 != fingerprint:
        raise MarginalsRefusedError(
            f"site '{name}': its public schema gives other marginal tables than the coordinator's "
            f"(spec {fingerprint[:12]} against {expected_spec_sha256[:12]}); nothing released"
        )
    path = site.dir / RUNS_DIR / run_id / MARGINALS_FILE
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored["spec_sha256"] != fingerprint:
            raise MarginalsRefusedError(
                f"site '{name}' released its marginal tables for run '{run_id}' on other bins already; "
                "a second release would be a second spend, which its plan has no room for"
            )
        return MarginalRelease(**stored)
    plan = site.plan(run_id, planned_rounds, head_slope)
    if plan.marginal_noise_multiplier is None:
        raise MarginalsRefusedError(
            f"site '{name}' releases no marginal tables in run '{run_id}' "
            f"(privacy.marginals_share = {site.config.privacy.marginals_share:g} when the run was planned)"
        )
    if any(e.run_id == run_id and e.round == MARGINALS_ROUND for e in site.ledger.entries()):
        raise MarginalsRefusedError(
            f"site '{name}' reserved its marginal release for run '{run_id}' but never stored the tables "
            "(interrupted); it will not release fresh noise for a spend already counted"
        )
    try:
        epsilon_after = site.ledger.reserve(
            run_id=run_id, round=MARGINALS_ROUND, noise_multiplier=plan.marginal_noise_multiplier,
            sample_rate=1.0, steps=1,
        )  # fmt: skip
    except BudgetExceededError as exc:
        raise BudgetExceededError(f"site '{name}' {exc}") from exc
    # The noise must be unpredictable to anyone else: fresh OS randomness, never a known seed.
    rng = np.random.default_rng(secrets.randbits(128))
    noisy = add_gaussian_noise(count_tables(site.train, spec), plan.marginal_noise_multiplier, spec, rng)
    release = MarginalRelease(
        site=name,
        spec_sha256=fingerprint,
        tables=tables_to_json(noisy),
        noise_multiplier=plan.marginal_noise_multiplier,
        epsilon_step=rdp_epsilon([(plan.marginal_noise_multiplier, 1.0, 1)], site.ledger.target_delta),
        epsilon=epsilon_after,
        target_epsilon=site.ledger.target_epsilon,
        delta=site.ledger.target_delta,
    )
    write_text(path, json.dumps(release.to_result()) + "\n")
    return release


def check_marginals_result(result: dict[str, Any], spec: MarginalSpec) -> dict[str, np.ndarray]:
    """The noisy tables of a site's reply, if it keeps to the contract (else ValueError): exactly the
    spec's tables in their shapes, finite, the spec's fingerprint and positive finite scalars."""
    if set(result) != RESULT_KEYS:
        raise ValueError(f"unexpected fields {sorted(set(result) ^ RESULT_KEYS)}")
    if result["spec_sha256"] != spec_fingerprint(spec):
        raise ValueError("tables binned on another spec than the coordinator's")
    if not isinstance(result["tables"], str):
        raise ValueError("tables must be JSON text")
    tables = tables_from_json(result["tables"], spec)  # every table, its shape, finite
    if set(tables) != {t.name for t in spec.tables}:
        raise ValueError(f"unexpected tables {sorted(set(tables) - {t.name for t in spec.tables})}")
    for key in RESULT_KEYS - {"site", "spec_sha256", "tables"}:
        value = result[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{key} must be a positive number")
    return tables
