"""The coordinator's half of the federated DP marginals: ask, check, sum, make consistent, record.

Once per run, before its first round, the coordinator asks every site for the run's noisy
marginal tables (a QUERY with ``task = "marginals"``: the run id, its planned rounds and two bin
counts; no model). Each reply is checked against the contract
(:func:`fedsynth.client.marginal_release.check_marginals_result`); the accepted sites' tables
are summed (sites hold disjoint patients, so the sum is the pooled table plus the sum of their
independent noise) and made consistent by post-processing only
(:func:`fedsynth.marginals.consistency.make_consistent`). ``RUN_DIR/marginals.json`` holds
the spec, the summed and the consistent tables, and each site's noise and epsilon.

Each release is also a line in ``budget.jsonl`` (round 0, ``mechanism = "marginals"``) with
the scalars a training reply carries, so the budget report composes it with the rounds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from logging import INFO
from typing import Any

from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fedsynth.client.app import HEAD_SLOPE, LEDGER_FLOORS, MARGINALS_RECORD
from fedsynth.client.marginal_release import MARGINALS_ROUND, check_marginals_result, spec_fingerprint
from fedsynth.data.io import write_text
from fedsynth.data.schema import Schema
from fedsynth.marginals.consistency import make_consistent
from fedsynth.marginals.tables import DEFAULT_NUMERIC_BINS, DEFAULT_TIME_BINS, MarginalSpec, tables_to_json
from fedsynth.server.budget import site_epsilon_floors
from fedsynth.server.run import MARGINALS_FILE, RunDirectory
from fedsynth.server.site_releases import gather_releases, release_problem

MECHANISM = "marginals"


def _problem(reply: Message, spec: MarginalSpec) -> tuple[str | None, dict[str, Any] | None]:
    """(why the reply cannot be used, None) or (None, its result)."""
    return release_problem(reply, MARGINALS_RECORD, lambda result: check_marginals_result(result, spec))


def request_marginals(
    grid: Grid,
    run: RunDirectory,
    run_id: str,
    planned_rounds: int,
    schema: Schema,
    *,
    timeout: float,
    expected_sites: int,
    numeric_bins: int = DEFAULT_NUMERIC_BINS,
    time_bins: int = DEFAULT_TIME_BINS,
    head_slope: bool = False,
) -> dict[str, Any]:
    """Ask every site for its noisy tables; write ``RUN_DIR/marginals.json`` and the budget lines.
    ``head_slope``: the run will ask for the slope release at its end (the sites plan for it)."""
    spec = MarginalSpec.from_schema(schema, numeric_bins=numeric_bins, time_bins=time_bins)
    config = ConfigRecord(
        {
            "task": MECHANISM,
            "run-id": run_id,
            "planned-rounds": planned_rounds,
            "numeric-bins": numeric_bins,
            "time-bins": time_bins,
            "spec-sha256": spec_fingerprint(spec),  # a site binning otherwise refuses before spending
            LEDGER_FLOORS: json.dumps(site_epsilon_floors(run.budget_records())),
            **({HEAD_SLOPE: True} if head_slope else {}),
        }
    )
    accepted, failures = gather_releases(
        grid, run, config, record=MARGINALS_RECORD, release_round=MARGINALS_ROUND,
        check=lambda result: check_marginals_result(result, spec), timeout=timeout, expected_sites=expected_sites,
    )  # fmt: skip
    now = datetime.now(UTC).isoformat()
    tables = [check_marginals_result(result, spec) for _, result in accepted]
    sites = [
        {"site": result["site"], "node_id": node_id,
         **{k: float(result[k]) for k in ("noise_multiplier", "epsilon_step", "epsilon")}}
        for node_id, result in accepted
    ]  # fmt: skip
    summed = {t.name: sum(s[t.name] for s in tables) for t in spec.tables} if tables else None
    document = {
        "time": now,
        "run_id": run_id,
        "spec": spec.to_dict(),
        "spec_sha256": spec_fingerprint(spec),
        "sites": sorted(sites, key=lambda s: s["site"]),
        "failures": failures,
        # Incomplete: the sum covers only the sites listed, not the federation's population.
        "complete": bool(sites) and not failures,
        "noisy_tables": json.loads(tables_to_json(summed)) if summed else None,
        "consistent_tables": json.loads(tables_to_json(make_consistent(summed, spec))) if summed else None,
        "note": (
            "Sum of each site's Gaussian-noised counts (one DP release per site, in its ledger), made "
            "non-negative with agreeing margins by post-processing only."
        ),
    }
    write_text(run.path / MARGINALS_FILE, json.dumps(document) + "\n")
    log(INFO, "Marginals: %s site(s) released, %s failure(s)", len(sites), len(failures))
    return document
