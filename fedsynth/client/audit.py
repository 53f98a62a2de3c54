"""A site's privacy audit of the global model: every audit on the site's own rows, aggregates out.

This is the site half of the federated audit protocol (issue 4): given the global model (the
weights the coordinator already holds), the site samples a synthetic set from the model alone,
then runs the nearest-neighbour audit, the distance, density and white-box membership attacks
and Anonymeter against its own train and holdout rows. Only the aggregates each audit returns
(counts, shares with CIs, percentiles, fixed-size histograms and ROC grids) are in the result;
:func:`check_audit_result` is the contract a reply must meet.
"""

from __future__ import annotations

from typing import Any

from fedsynth.client.site import Site
from fedsynth.model.mcm import MCM
from fedsynth.privacy.anonymeter_audit import AnonymeterSettings, anonymeter_audit, risks_to_dicts
from fedsynth.privacy.membership import ROC_POINTS, density_attack, distance_attack, white_box_attack
from fedsynth.privacy.nearest_neighbour import HISTOGRAM_BINS, nearest_neighbour_audit

# The only list lengths an audit result may contain: histograms, their edges and ROC grids.
ALLOWED_LIST_LENGTHS = {HISTOGRAM_BINS, HISTOGRAM_BINS + 1, ROC_POINTS, 2}


def run_site_audit(
    site: Site, model: MCM, seed: int = 0, anonymeter: AnonymeterSettings | None = None
) -> dict[str, Any]:
    """All audits of ``model`` at ``site``; a JSON-able dict of aggregates only."""
    synthetic = model.sample(len(site.train), seed=seed)
    schema = site.schema
    result = {
        "site": site.config.name,
        "n_train": len(site.train),
        "n_holdout": len(site.holdout),
        "n_synthetic": len(synthetic),
        "nearest_neighbour": nearest_neighbour_audit(synthetic, site.train, site.holdout, schema, seed).to_dict(),
        "attacks": [
            distance_attack(synthetic, site.train, site.holdout, schema).to_dict(),
            density_attack(synthetic, site.train, site.holdout, schema, seed).to_dict(),
            white_box_attack(model, site.train, site.holdout, seed=seed).to_dict(),
        ],
        "anonymeter": risks_to_dicts(anonymeter_audit(synthetic, site.train, site.holdout, schema, anonymeter)),
    }
    check_audit_result(result, max_rows=len(site.train) + len(site.holdout))
    return result


def check_audit_result(result: Any, max_rows: int, path: str = "result") -> None:
    """Raise ValueError unless ``result`` holds only scalars, names and bounded-size lists.

    A list as long as a table (one value per record) would be row-level data: refused.
    """
    if isinstance(result, dict):
        for key, value in result.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: non-string key {key!r}")
            check_audit_result(value, max_rows, f"{path}.{key}")
    elif isinstance(result, (list, tuple)):
        is_numbers = all(isinstance(v, (int, float)) for v in result)
        if is_numbers and len(result) not in ALLOWED_LIST_LENGTHS:
            raise ValueError(f"{path}: a list of {len(result)} numbers is not an aggregate")
        if len(result) >= max_rows and max_rows > max(ALLOWED_LIST_LENGTHS):
            raise ValueError(f"{path}: {len(result)} entries, as many as the site's records")
        for index, value in enumerate(result):
            check_audit_result(value, max_rows, f"{path}[{index}]")
    elif not isinstance(result, (str, int, float, bool)) and result is not None:
        raise ValueError(f"{path}: {type(result).__name__} is not a scalar")
