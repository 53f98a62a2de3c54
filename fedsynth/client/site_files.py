"""The files of a site's state directory, and the digest its split records of the data.

Kept apart from :mod:`fedsynth.client.site` (which trains, so imports torch) so that
``fedsynth site status`` and ``site check`` read a site without loading torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

# The site's state directory's files (``Site``'s ``site_dir``: ``SITE_DIR/state`` at a deployed site).
SPLIT_FILE = "split.json"
RUNS_DIR = "runs"
PLAN_FILE = "dp_plan.json"
MARGINALS_FILE = "marginals.json"  # in a run's directory: the run's one marginal release
AUDIT_LOG = "audits.jsonl"  # the audits and evaluations the site answered
MARGINALS_ROUND = 0  # the ledger's round number for a run's marginal release (training rounds start at 1)


def prior_state_files(state_dir: Path) -> list[Path]:
    """The files showing a site has worked before (its split, its run plans), those that exist."""
    return [p for p in (state_dir / SPLIT_FILE, *state_dir.glob(f"{RUNS_DIR}/*/{PLAN_FILE}")) if p.exists()]


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's values and column names (row order matters)."""
    hasher = hashlib.sha256(json.dumps(list(map(str, frame.columns))).encode())
    hasher.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return hasher.hexdigest()
