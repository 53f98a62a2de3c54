"""The coordinator's Flower ServerApp: FedAvg rounds over the sites, checkpoints, final model.

``make_server_app(config, schema)`` builds the app for ``fedsynth train``; the module-level
``app`` is the same app for ``flwr run``, reading the federation config path from the run
config key ``federation-config``. The run config key ``task`` makes the same app ask the
connected sites to audit (``"audit"``) or evaluate (``"evaluate"``) the run's published model
instead of training: on a real deployment the coordinator holds no site's rows, so these
questions must travel over the deployment engine like a training round (see ``APP_CONFIG``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from logging import INFO
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from fedsynth.client.app import EFFECT_RATES, HEAD_SLOPE
from fedsynth.client.packed_weights import layout_of, pack
from fedsynth.client.slope_release import trained_rounds
from fedsynth.data.datasets import bundled_schema
from fedsynth.data.schema import Schema
from fedsynth.model.fairness import check_fairness
from fedsynth.model.generators import config_to_dict, new_generator
from fedsynth.server.app_config import APP_CONFIG, TASKS
from fedsynth.server.audit import run_audit
from fedsynth.server.budget import SPEND_STATUSES
from fedsynth.server.config import FederationConfig
from fedsynth.server.effect_rates import run_effect_rates
from fedsynth.server.evaluation import run_evaluation
from fedsynth.server.head_centre import run_head_centre
from fedsynth.server.head_slope import request_head_slope, wants_head_slope
from fedsynth.server.marginals import MARGINALS_FILE, request_marginals
from fedsynth.server.prompt_grid import PromptGrid
from fedsynth.server.resume import check_resumable
from fedsynth.server.run import Checkpoint, RunDirectory
from fedsynth.server.strategy import mcm_fedavg


def new_run_id() -> str:
    return datetime.now(UTC).strftime("run-%Y%m%dT%H%M%SZ")


def run_federation(grid: Grid, config: FederationConfig, schema: Schema) -> Path | None:
    """Run (or resume) the configured rounds; return the published final model's directory."""
    run = RunDirectory(config.run_dir)
    existing = (config.run_dir / "run.json").exists()
    check_fairness(config.model, schema)  # before anything is written
    if existing:
        check_resumable(run, config, schema)
    run_id = run.info()["run_id"] if existing else (config.run_id or new_run_id())
    run.initialise(run_id, schema, config.model_dump(mode="json", by_alias=True))

    latest = checkpoint = run.latest_checkpoint()
    trained = trained_rounds(checkpoint.round) if checkpoint is not None else None
    if checkpoint is not None and trained is not None and config.rounds > trained:
        checkpoint = run.checkpoint(trained)  # more rounds: go on from the last trained, unscaled
    if checkpoint is not None:
        model = run.load_checkpoint(checkpoint)  # verifies the manifest hashes
        done = trained_rounds(checkpoint.round) or checkpoint.round
        log(INFO, "Resuming run %s after round %s (checkpoint sha256 %s)", run_id, done, checkpoint.sha256[:12])
    else:
        model = new_generator(config.model).build(schema)
        done = 0
    slope = config.head_slope and wants_head_slope(model)
    expected = config.simulation.sites if config.engine == "simulation" else config.min_sites
    if done >= config.rounds:
        log(INFO, "Run %s already completed its %s rounds", run_id, config.rounds)
        final = _with_head_slope(grid, run, config, run_id, checkpoint, expected) if slope else checkpoint
        return run.publish_model(final) if final else None
    if config.marginals and not (run.path / MARGINALS_FILE).exists():
        # Before round 1: a site plans every spend at the first request, so the order is free.
        request_marginals(
            grid, run, run_id, config.rounds, schema, timeout=config.round_timeout, expected_sites=expected,
            head_slope=slope,
        )  # fmt: skip
    if checkpoint is None:  # a resumed run's checkpoint already holds the centres
        run_head_centre(run, model)
    rates = run_effect_rates(run, model)
    state = model.network_.state_dict()
    strategy, checkpoints = mcm_fedavg(
        run, schema, config.model, layout_of(state), round_offset=done, min_sites=config.min_sites
    )
    train_config = ConfigRecord(
        {
            "run-id": run_id,
            "planned-rounds": config.rounds,
            "model-config": json.dumps(config_to_dict(config.model)),
            **({EFFECT_RATES: json.dumps(rates)} if rates is not None else {}),
            **({HEAD_SLOPE: True} if slope else {}),
        }
    )
    if config.secure_aggregation.enabled:  # the coordinator then sees only the sum of the updates
        from fedsynth.server.secure_aggregation import SecureAggregationGrid

        grid = SecureAggregationGrid(grid, config.secure_aggregation)
    strategy.start(
        grid=grid,
        initial_arrays=pack(state),
        num_rounds=config.rounds - done,
        timeout=config.round_timeout,
        train_config=train_config,
    )
    final = checkpoints.last_checkpoint
    if final is None:  # no round produced weights: the run's model stays what it was
        return run.publish_model(latest) if latest else None
    if slope:
        final = _with_head_slope(grid, run, config, run_id, final, expected)
    return run.publish_model(final)


def _with_head_slope(
    grid: Grid, run: RunDirectory, config: FederationConfig, run_id: str, final: Checkpoint | None, expected: int
) -> Checkpoint | None:
    """The checkpoint to publish once the slope release is asked for: ``final`` itself when it is
    not the last training round's (none yet, or the slope's own, from a resumed run)."""
    if final is None or final.round != config.rounds:
        return final
    model = run.load_checkpoint(final).calibrate_to(run.marginal_target())
    return request_head_slope(
        grid, run, run_id, model, final, config.rounds, timeout=config.round_timeout, expected_sites=expected
    )


def make_server_app(config: FederationConfig, schema: Schema) -> ServerApp:
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, config, schema)

    return server_app


app = ServerApp()


def federation_schema(config: FederationConfig) -> Schema:
    """The public schema the sites declare: ``federation.schema``, else the simulated table's."""
    if config.schema_path is not None:
        return Schema.from_toml(config.schema_path)
    if config.simulation.schema_path is not None:
        return Schema.from_toml(config.simulation.schema_path)
    if config.simulation.dataset is not None:
        return bundled_schema(config.simulation.dataset)
    raise ValueError("federation.schema is missing: name the public schema TOML every site declares")


@dataclass(frozen=True)
class SiteQuery:
    """A ``task = "audit" | "evaluate"`` run's settings, read from the run config."""

    task: str
    seed: int
    expected_sites: int
    horizons: list[float] | None
    fairness_columns: list[str] | None = None


def _int_setting(run_config: Mapping[str, Any], key: str, minimum: int) -> int:
    value = run_config.get(key, APP_CONFIG[key])
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"run config {key!r} is {value!r}: give an integer >= {minimum}, e.g. {key}=3")
    return value


def site_query_settings(run_config: Mapping[str, Any], run: RunDirectory) -> SiteQuery:
    """The audit/evaluation settings of ``run_config``, checked, each error naming its key.

    ``expected-sites`` 0 means every site that trained in the run (its budget record): a site
    whose rows shaped the model must answer before an audit is complete, and ``min_sites`` (the
    fewest a round may run with) would let an audit pass without one.
    """
    task = str(run_config.get("task", "train"))
    seed = _int_setting(run_config, "seed", 0)
    expected = _int_setting(run_config, "expected-sites", 0)
    if expected == 0:
        expected = len({r["site"] for r in run.budget_records() if r.get("status") in SPEND_STATUSES})
        if expected == 0:
            raise ValueError(
                f"{run.path} records no site that trained: give run config 'expected-sites', e.g. expected-sites=3"
            )
    text = str(run_config.get("horizons", "")).strip()
    horizons = None
    if text:
        example = 'horizons="[365, 730]"'
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        valid = isinstance(parsed, list) and parsed and all(isinstance(h, int | float) and h > 0 for h in parsed)
        if not valid or task != "evaluate":
            raise ValueError(
                f"run config 'horizons' is {text!r}: give a JSON list of positive times in the time column's "
                f'unit, e.g. {example}, and only with task="evaluate"'
            )
        horizons = [float(h) for h in parsed]
    return SiteQuery(task, seed, expected, horizons, _fairness_columns(run_config, task))


def _fairness_columns(run_config: Mapping[str, Any], task: str) -> list[str] | None:
    """The run config's ``fairness-columns``: a JSON list of column names (evaluate only)."""
    text = str(run_config.get("fairness-columns", "")).strip()
    if not text:
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    valid = isinstance(parsed, list) and parsed and all(isinstance(c, str) and c for c in parsed)
    if not valid or task != "evaluate":
        raise ValueError(
            f"run config 'fairness-columns' is {text!r}: give a JSON list of binary or categorical columns of "
            'the public schema, e.g. fairness-columns=\'["gender"]\', and only with task="evaluate"'
        )
    return parsed


@app.main()
def main(grid: Grid, context: Context) -> None:
    path = str(context.run_config.get("federation-config", ""))
    if not path:
        raise ValueError(
            "run config 'federation-config' is empty: `flwr run . <superlink> --run-config "
            "'federation-config=\"/abs/path/federation.toml\"'`"
        )
    config = FederationConfig.from_toml(path)
    grid = PromptGrid(grid)  # the deployment engine's grid waits 3 s between pulls of replies
    task = str(context.run_config.get("task", "train"))
    if task not in TASKS:
        raise ValueError(f"run config 'task' is {task!r}: use one of {', '.join(TASKS)}")
    if task == "train":
        run_federation(grid, config, federation_schema(config))
        return
    if not (config.run_dir / "model").exists():
        raise FileNotFoundError(f"{config.run_dir}/model is missing: train the run before task={task!r}")
    query = site_query_settings(context.run_config, RunDirectory(config.run_dir))
    # A site's audit or evaluation is one message exchange, bounded like a training round.
    if task == "audit":
        run_audit(grid, config.run_dir, query.seed, timeout=config.round_timeout, expected_sites=query.expected_sites)
    else:
        run_evaluation(
            grid,
            config.run_dir,
            query.seed,
            query.horizons,
            timeout=config.round_timeout,
            expected_sites=query.expected_sites,
            fairness_columns=query.fairness_columns,
        )
