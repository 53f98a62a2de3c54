"""The site's Flower ClientApp: train one DP round on the global weights, reply with aggregates.

The reply is built only by :func:`train_reply`, and its contents are fixed by
:data:`REPLY_METRICS`: the weights (one packed vector of exactly the global model's parameters,
:mod:`fedsynth.client.packed_weights`), the number of training records and scalar privacy figures.
Tests check every message type against this contract. An over-budget round or a bad site
set-up raises, and Flower turns the exception into an error reply: no weights leave.

Which site a ClientApp instance is comes from its node config: ``site-dir`` (a directory
with ``site.toml``, the public ``schema.toml`` and the site's durable state) or, in Flower's
simulation engine, ``partition-id`` resolved against the run's ``sites/`` directory.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore import log

from fedsynth.client.audit_log import AuditRefusedError
from fedsynth.client.config import SCHEMA_FILE, SITE_FILE, SiteConfig
from fedsynth.client.ledger import BudgetExceededError
from fedsynth.client.ledger_backup import STATE
from fedsynth.client.marginal_release import MarginalsRefusedError
from fedsynth.client.packed_weights import layout_from_json, pack, unpack
from fedsynth.client.secure_aggregation import (
    SecureAggregationRefusedError,
    SecureAggregationRequiredError,
    check_secure_aggregation,
    secure_aggregation_mod,
)
from fedsynth.client.site import EffectRatesRefusedError, ReceivedWeightsRefusedError, RoundResult, Site
from fedsynth.client.site_errors import shareable_message, site_identity
from fedsynth.client.slope_release import HeadSlopeRefusedError
from fedsynth.data.schema import Schema
from fedsynth.marginals.target import MarginalTarget
from fedsynth.model.generators import config_from_dict, new_generator

# Every scalar a site may send, and nothing else.
REPLY_METRICS = (
    "num-examples",
    "epsilon",
    "target-epsilon",
    "delta",
    "noise-multiplier",
    "sample-rate",
    "steps",
    "train-loss",
)
# The train instruction's JSON map of site name -> the largest epsilon the coordinator has
# recorded for it in the run: a site whose ledger composes to less refuses (it was reset).
LEDGER_FLOORS = "ledger-floors"
# A training round's step multipliers for the generator's effects (JSON list), which the
# coordinator computes from the run's DP marginal tables: public post-processing.
EFFECT_RATES = "effect-rates"
# The train instruction's JSON list of [name, shape] that unpacks the global weights.
WEIGHTS_LAYOUT = "weights-layout"
# In the marginals and train instructions: the run will ask for the slope release at its end,
# so the site's plan (made at whichever comes first) leaves room for it.
HEAD_SLOPE = "head-slope"

_sites: dict[Path, Site] = {}
_sites_lock = threading.Lock()


def site_dir_from_context(context: Context, sites_root: Path | None = None) -> Path:
    """The site directory named by the node config (deployment) or the partition (simulation)."""
    node_config = context.node_config
    if "site-dir" in node_config:
        return Path(str(node_config["site-dir"]))
    root = sites_root or context.run_config.get("sites-root")
    if "partition-id" in node_config and root is not None:
        return Path(str(root)) / f"site-{int(node_config['partition-id'])}"
    raise ValueError(
        "this SuperNode has no site: start it with --node-config \"site-dir='/path/to/site'\" "
        f"(a directory with {SITE_FILE} and {SCHEMA_FILE})"
    )


def open_site(site_dir: Path) -> Site:
    """The site at ``site_dir``, opened once per process (data validated, ledger opened)."""
    site_dir = site_dir.resolve()
    with _sites_lock:
        if site_dir not in _sites:
            config = SiteConfig.from_toml(site_dir / SITE_FILE)
            schema_path = config.schema_path or site_dir / SCHEMA_FILE
            _sites[site_dir] = Site(config, Schema.from_toml(schema_path), site_dir / STATE)
        return _sites[site_dir]


def train_reply(message: Message, result: RoundResult, site_name: str) -> Message:
    """The only reply a site sends after training: weights, a count and scalar privacy figures."""
    metrics = MetricRecord(
        {
            "num-examples": result.num_examples,
            "epsilon": result.epsilon_spent,
            "target-epsilon": result.target_epsilon,
            "delta": result.target_delta,
            "noise-multiplier": result.noise_multiplier,
            "sample-rate": result.sample_rate,
            "steps": result.steps,
            "train-loss": result.train_loss,
        }
    )
    assert tuple(metrics.keys()) == REPLY_METRICS
    content = RecordDict(
        {
            "arrays": pack(result.state_dict),
            "metrics": metrics,
            "site": ConfigRecord({"name": site_name}),
        }
    )
    return Message(content=content, reply_to=message)


class SiteError(RuntimeError):
    """What the coordinator may learn of a failure at a site: its kind, or its shareable summary."""


def without_details(handler):  # type: ignore[no-untyped-def]
    """Flower sends an exception's text back to the coordinator; data errors name rows and values.

    Budget, audit-cap, marginal-release, effect-rate and secure-aggregation refusals (figures, settings and the
    site's name only) pass unchanged; a data validation error or a too-few-records refusal is sent
    as its summary without values (:func:`fedsynth.client.site_errors.shareable_message`); any
    other error is logged in full at the site and replaced by its type name.
    """

    @functools.wraps(handler)
    def wrapper(message: Message, context: Context, sites_root: Path | None = None) -> Message:
        try:
            return handler(message, context, sites_root)
        except (
            BudgetExceededError,
            AuditRefusedError,
            MarginalsRefusedError,
            HeadSlopeRefusedError,
            EffectRatesRefusedError,
            ReceivedWeightsRefusedError,
            SecureAggregationRequiredError,
            SecureAggregationRefusedError,
        ):
            raise
        except Exception as exc:
            log(ERROR, "%s failed at this site: %r", handler.__name__, exc)
            site_dir = None
            with contextlib.suppress(Exception):
                site_dir = site_dir_from_context(context, sites_root)
            name, data_name = site_identity(site_dir)
            shared = shareable_message(exc, name, data_name)
            if shared is None:
                shared = f"{name}: {type(exc).__name__} at the site; details are in the site's own log (not sent)"
            raise SiteError(shared) from None

    return wrapper


@without_details
def handle_train(message: Message, context: Context, sites_root: Path | None = None) -> Message:
    """Train one DP round at this site on the global weights in ``message``."""
    started = time.monotonic()
    site = open_site(site_dir_from_context(context, sites_root))
    check_secure_aggregation(
        message, context, site.config.name, site.config.privacy.require_secure_aggregation, len(site.train)
    )
    config = message.content["config"]
    model_config = config_from_dict(json.loads(str(config["model-config"])))
    opened = time.monotonic()
    result = site.train_round(
        unpack(message.content["arrays"], layout_from_json(str(config[WEIGHTS_LAYOUT]))),
        model_config,
        run_id=str(config["run-id"]),
        server_round=int(config["server-round"]),
        planned_rounds=int(config["planned-rounds"]),
        coordinator_floor=ledger_floor(config, site.config.name),
        effect_rates=effect_rates(config),
        head_slope=asks_head_slope(config),
    )
    # Where a round's time goes, for operators: a site's process answers message after message.
    log(
        INFO,
        "site %s round %s: process %d, age %.1f s at the message, site opened in %.2f s, DP round %.2f s",
        site.config.name, config["server-round"], os.getpid(), process_age_seconds() - (time.monotonic() - started),
        opened - started, time.monotonic() - opened,
    )  # fmt: skip
    return train_reply(message, result, site.config.name)


def effect_rates(config: ConfigRecord) -> list[float] | None:
    """The round's effect rates (None if not sent); the site checks their values before any spend."""
    if EFFECT_RATES not in config:
        return None
    try:
        rates = json.loads(str(config[EFFECT_RATES]))
    except json.JSONDecodeError:
        raise EffectRatesRefusedError(f"the instruction's {EFFECT_RATES} is not JSON") from None
    if not isinstance(rates, list):
        raise EffectRatesRefusedError(f"the instruction's {EFFECT_RATES} must be a list of numbers")
    return rates


def asks_head_slope(config: ConfigRecord) -> bool:
    return HEAD_SLOPE in config and bool(config[HEAD_SLOPE])


def ledger_floor(config: ConfigRecord, site_name: str) -> float:
    """The largest epsilon the coordinator has recorded for this site (0 if none, or not sent)."""
    if LEDGER_FLOORS not in config:
        return 0.0
    return float(json.loads(str(config[LEDGER_FLOORS])).get(site_name, 0.0))


def process_age_seconds() -> float:
    """Seconds since this process started (Linux /proc; 0 where unavailable)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


AUDIT_RECORD = "audit"
EVALUATION_RECORD = "evaluation"
MARGINALS_RECORD = "marginals"
HEAD_SLOPE_RECORD = "head-slope"
# The evaluation instruction's JSON list of sensitive columns (of the public schema) the
# coordinator asks subgroup fairness figures for, besides the model's own fairness_column.
FAIRNESS_COLUMNS = "fairness_columns"


def marginals_reply(message: Message, site: Site) -> Message:
    """The run's noisy marginal tables (released once: reserved in the ledger first, then stored).

    The instruction carries only the run id, its planned rounds (the release is planned with
    the run's DP-SGD) and two bin counts; the site builds the tables from its own public schema.
    The reply is one ConfigRecord like the audit's: the site's name and the release as JSON
    (noisy tables, the spec's fingerprint and the scalar privacy figures a train reply carries).
    """
    from fedsynth.client.marginal_release import release_marginals

    config = message.content["config"]
    release = release_marginals(
        site,
        run_id=str(config["run-id"]),
        planned_rounds=int(config["planned-rounds"]),
        numeric_bins=int(config["numeric-bins"]),
        time_bins=int(config["time-bins"]),
        coordinator_floor=ledger_floor(config, site.config.name),
        expected_spec_sha256=str(config["spec-sha256"]) if "spec-sha256" in config else None,
        head_slope=asks_head_slope(config),
    )
    result = json.dumps(release.to_result())
    content = RecordDict({MARGINALS_RECORD: ConfigRecord({"site": site.config.name, "result": result})})
    return Message(content=content, reply_to=message)


def head_slope_reply(message: Message, site: Site) -> Message:
    """The run's noisy slope score at the final global weights in ``message`` (released once,
    reserved in the ledger first: :func:`fedsynth.client.slope_release.release_head_slope`). The
    reply is one ConfigRecord: the site's name and the release as JSON (one noisy number, the
    weights' digest, the record count and scalar privacy figures)."""
    from fedsynth.client.slope_release import release_head_slope

    config = message.content["config"]
    release = release_head_slope(
        site,
        message.content["arrays"].to_torch_state_dict(),
        config_from_dict(json.loads(str(config["model-config"]))),
        run_id=str(config["run-id"]),
        planned_rounds=int(config["planned-rounds"]),
        clip=float(config["score-clip"]),
        coordinator_floor=ledger_floor(config, site.config.name),
    )
    result = json.dumps(release.to_result())
    content = RecordDict({HEAD_SLOPE_RECORD: ConfigRecord({"site": site.config.name, "result": result})})
    return Message(content=content, reply_to=message)


@without_details
def handle_query(message: Message, context: Context, sites_root: Path | None = None) -> Message:
    """Audit or evaluate the global model in ``message`` against this site's own rows, or release
    the run's DP marginal tables (task "marginals", :func:`marginals_reply`) or its slope score
    (task "head-slope", :func:`head_slope_reply`).

    The instruction carries the global weights (which the coordinator holds anyway), the model
    config, a sampling seed and the task ("audit" or "evaluate"; an evaluation may name its
    horizons and sensitive columns); the site samples from the model itself, so no synthetic or real row travels in
    either direction. The reply is one ConfigRecord: the site's name and the result as JSON,
    checked against the task's aggregate-only contract first.
    """
    site = open_site(site_dir_from_context(context, sites_root))
    config = message.content["config"]
    if "task" in config and str(config["task"]) == "marginals":  # no model: the tables are of the site's rows
        return marginals_reply(message, site)
    if "task" in config and str(config["task"]) == HEAD_SLOPE_RECORD:
        return head_slope_reply(message, site)
    model = new_generator(config_from_dict(json.loads(str(config["model-config"])))).build(site.schema)
    model.network_.load_state_dict(message.content["arrays"].to_torch_state_dict())
    if "calibration" in config:  # the run's DP tables: the site samples exactly as the release does
        model.calibrate_to(MarginalTarget.from_json(str(config["calibration"]), site.schema, "the query's tables"))
    seed = int(config["seed"])
    task = str(config["task"]) if "task" in config else "audit"
    if task == "audit":
        from fedsynth.client.audit import run_site_audit

        # The sample to audit (n, conditions): the release the coordinator will sample with this seed.
        spec = json.loads(str(config["sample"])) if "sample" in config else {}
        result = run_site_audit(site, model, seed=seed, n=spec.get("n"), conditions=spec.get("conditions"))
        record = AUDIT_RECORD
    elif task == "evaluate":
        from fedsynth.client.evaluation import run_site_evaluation

        horizons = json.loads(str(config["horizons"])) if "horizons" in config else None
        size = json.loads(str(config["sample"])).get("n") if "sample" in config else None  # the release's
        columns = json.loads(str(config[FAIRNESS_COLUMNS])) if FAIRNESS_COLUMNS in config else None
        if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
            raise ValueError(f"{FAIRNESS_COLUMNS} must be a JSON list of column names")
        record = EVALUATION_RECORD
        result = run_site_evaluation(site, model, seed=seed, horizons=horizons, n=size, fairness_columns=columns)
    else:
        raise ValueError(
            f"unknown query task {task!r}; this site answers 'audit', 'evaluate', 'marginals' and 'head-slope'"
        )
    content = RecordDict({record: ConfigRecord({"site": site.config.name, "result": json.dumps(result)})})
    return Message(content=content, reply_to=message)


def make_client_app(sites_root: Path | None = None) -> ClientApp:
    """A ClientApp; ``sites_root`` maps simulation partitions to site directories."""
    client_app = ClientApp()

    @client_app.train(mods=[secure_aggregation_mod])  # a plain round passes it unchanged
    def train(message: Message, context: Context) -> Message:
        return handle_train(message, context, sites_root)

    @client_app.query()
    def query(message: Message, context: Context) -> Message:
        return handle_query(message, context, sites_root)

    return client_app


app = make_client_app()
