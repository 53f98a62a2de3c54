"""A site's privacy audit of the global model: every audit on the site's own rows, aggregates out.

This is the site half of the federated audit protocol (issue 4): given the global model (the
weights the coordinator already holds) and a sample to audit (seed, n, conditions: the release
the coordinator means to sample with ``fedsynth sample``), the site draws exactly that sample
from the model alone, then runs the nearest-neighbour audit, the distance, density and white-box membership attacks
and Anonymeter against its own train and holdout rows. Only the aggregates each audit returns
(counts, shares with CIs, percentiles, fixed-size histograms and ROC grids) are in the result;
:func:`check_audit_result` is the contract a reply must meet. The reply also names the sample it
audited (seed, n, conditions and :func:`fedsynth.model.rows_digest.rows_digest` of its rows: a
hash of model output, not of site data), so the release gate can check that the released file
holds the very rows every site audited.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from fedsynth.client.audit_log import record_audit
from fedsynth.client.site import Site
from fedsynth.model.generators import AnyGenerator, generator_digest
from fedsynth.model.rows_digest import rows_digest
from fedsynth.privacy.anonymeter_audit import AnonymeterSettings
from fedsynth.privacy.evaluators import (
    AnonymeterEvaluator,
    AuditEvaluator,
    MembershipEvaluator,
    NearestNeighbourEvaluator,
    WhiteBoxMembershipEvaluator,
)
from fedsynth.privacy.membership import ROC_POINTS
from fedsynth.privacy.nearest_neighbour import HISTOGRAM_BINS

# The only list lengths an audit result may contain: histograms, their edges and ROC grids.
ALLOWED_LIST_LENGTHS = {HISTOGRAM_BINS, HISTOGRAM_BINS + 1, ROC_POINTS, 2}
MAX_LIST_LENGTH = max(ALLOWED_LIST_LENGTHS)
MAX_STRING_LENGTH = 200  # names and labels; a long string could carry anything
# Keys of one mapping: per covariate, per column, per subgroup. A mapping as long as a table
# (one key per record) would be row-level data however short its values.
MAX_DICT_ENTRIES = 256


def site_sampling_seed(seed: int, site_name: str) -> int:
    """The seed a site samples its evaluation set with: the query's seed and the site's name.

    Why not the query's seed itself: every site would then draw the *same* synthetic rows
    (same model, same seed, same size), and the sites' evaluations, which the coordinator pools
    as independent estimates (hazard ratios, fidelity noise floors), would share that sample's
    luck. Audits are different: they judge the released rows themselves.
    """
    digest = hashlib.sha256(f"{seed}:{site_name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def start_site_query(
    site: Site,
    model: AnyGenerator,
    seed: int,
    kind: str,
    sample: tuple[int, list[str]] | None = None,
    n: int | None = None,
) -> tuple[str, int, Any]:
    """What every audit and evaluation does first, in this order: name the model, count the
    query against ``privacy.max_audits`` (on disk, before any row is read), then sample from
    the model at the site. ``sample`` = (n, conditions): exactly ``model.sample(n, conditions,
    seed)``, the rows a release sampled with that seed holds (audits); None: the site's own
    unconditional sample of ``n`` rows (default: its training size) with
    :func:`site_sampling_seed` (evaluations). Returns (model digest, query number, synthetic sample)."""
    resolved = model.resolve(sample[1]) if sample else []  # a bad condition costs no query
    size = int(sample[0]) if sample else len(site.train) if n is None else int(n)
    if size < 1:  # nor does a bad size
        raise ValueError(f"an {kind} needs at least one synthetic row; n is {size}")
    digest = generator_digest(model)
    number = record_audit(site, digest, seed, kind=kind)
    if sample is None:
        return digest, number, model.sample(size, seed=site_sampling_seed(seed, site.config.name))
    return digest, number, model.sample(size, resolved, seed=seed)


def run_site_audit(
    site: Site,
    model: AnyGenerator,
    seed: int = 0,
    anonymeter: AnonymeterSettings | None = None,
    n: int | None = None,
    conditions: list[str] | None = None,
) -> dict[str, Any]:
    """All audits of ``model`` at ``site``; a JSON-able dict of aggregates only.

    The synthetic rows audited are ``model.sample(n, conditions, seed=seed)`` (``n`` defaults to
    the site's training size): the rows ``fedsynth sample -n N --seed SEED`` releases, named in
    the result's ``sample`` with their digest. Each membership attack also yields an empirical
    epsilon lower bound at the site's delta, set next to the site's accountant epsilon (its
    whole ledger: every model trained on these rows spent at most that); a bound above it is
    flagged as a probable DP bug. Counted against ``privacy.max_audits`` before anything runs.
    """
    n = len(site.train) if n is None else int(n)
    conditions = list(conditions or [])
    digest, number, synthetic = start_site_query(site, model, seed, "audit", (n, conditions))
    schema = site.schema
    delta = site.ledger.target_delta
    accountant_epsilon = site.ledger.epsilon()
    train, holdout = site.train, site.holdout
    timings: dict[str, float] = {}

    def evaluated(evaluator: AuditEvaluator) -> AuditEvaluator:
        started = time.perf_counter()
        evaluator.evaluate()
        timings[evaluator.name] = round(time.perf_counter() - started, 3)
        return evaluator

    attacks = [
        evaluated(MembershipEvaluator(train, synthetic, holdout, schema, "distance", seed, delta)),
        evaluated(MembershipEvaluator(train, synthetic, holdout, schema, "density", seed, delta)),
        evaluated(WhiteBoxMembershipEvaluator(train, model, holdout, schema, seed, delta)),
    ]
    for attack in attacks:
        bound = attack.result.empirical_epsilon
        bound["exceeds_accountant"] = bound["epsilon_lower_bound"] > accountant_epsilon
    result = {
        "site": site.config.name,
        "audit_number": number,
        "model_sha256": digest,
        "n_train": len(train),
        "n_holdout": len(holdout),
        "n_synthetic": len(synthetic),
        # Exactly which rows were audited: the release gate regenerates them and compares.
        "sample": {"seed": seed, "n": n, "conditions": json.dumps(conditions), "sha256": rows_digest(synthetic)},
        "delta": delta,
        "accountant_epsilon": accountant_epsilon,
        "nearest_neighbour": evaluated(NearestNeighbourEvaluator(train, synthetic, holdout, schema, seed)).results(),
        "attacks": [attack.results() for attack in attacks],
        "anonymeter": evaluated(AnonymeterEvaluator(train, synthetic, holdout, schema, anonymeter)).results(),
        "seconds": timings,
    }
    check_site_audit_result(result)
    return result


def check_site_audit_result(result: dict[str, Any]) -> None:
    """The aggregate-only contract of an audit reply, at the site and again at the coordinator."""
    check_audit_result(result, max_rows=int(result["n_train"]) + int(result["n_holdout"]))


def check_audit_result(
    result: Any, max_rows: int, path: str = "result", allowed_lengths: frozenset[int] | set[int] = ALLOWED_LIST_LENGTHS
) -> None:
    """Raise ValueError unless ``result`` holds only scalars, names and bounded-size lists.

    A list as long as a table (one value per record) would be row-level data: refused, as are
    lists longer than the longest aggregate (a ROC grid) and strings longer than a label.
    """
    if isinstance(result, dict):
        if len(result) > MAX_DICT_ENTRIES:
            raise ValueError(f"{path}: a mapping of {len(result)} entries is not an aggregate")
        for key, value in result.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: non-string key {key!r}")
            check_audit_result(value, max_rows, f"{path}.{key}", allowed_lengths)
    elif isinstance(result, (list, tuple)):
        # Withheld cells (None) do not make a list of numbers anything else.
        is_numbers = all(isinstance(v, (int, float)) or v is None for v in result)
        if is_numbers and len(result) not in allowed_lengths:
            raise ValueError(f"{path}: a list of {len(result)} numbers is not an aggregate")
        if len(result) > MAX_LIST_LENGTH or (len(result) >= max_rows and max_rows > MAX_LIST_LENGTH):
            raise ValueError(f"{path}: {len(result)} entries is not an aggregate")
        for index, value in enumerate(result):
            check_audit_result(value, max_rows, f"{path}[{index}]", allowed_lengths)
    elif isinstance(result, str) and len(result) > MAX_STRING_LENGTH:
        raise ValueError(f"{path}: a string of {len(result)} characters is not a label")
    elif not isinstance(result, (str, int, float, bool)) and result is not None:
        raise ValueError(f"{path}: {type(result).__name__} is not a scalar")
