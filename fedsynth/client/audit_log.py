"""The site's count of privacy audits it has answered: durable, written before each audit runs.

Audit results are exact functions of the site's rows, not differentially private, so every
answer the coordinator gets is one more non-private release. The site caps them
(``privacy.max_audits``) the way its ledger caps epsilon: the entry is on disk, fsynced,
before the audit reads a row, and a crash cannot hand out an uncounted answer.
"""

from __future__ import annotations

import fcntl
import json
import os

import pandas as pd

from fedsynth.client.site import Site
from fedsynth.client.site_files import AUDIT_LOG


class AuditRefusedError(RuntimeError):
    """The site will not run another audit; the message (site name and counts only) says why."""


def record_audit(site: Site, digest: str, seed: int, kind: str = "audit") -> int:
    """Append this audit to the site's audit log (on disk before it runs); refuse past the cap.

    Evaluations (``kind="evaluation"``) are counted here too: their results are exact functions
    of the rows as well. Returns the query's number. Like the privacy ledger, the record is written and fsynced
    first, so a crash during the audit cannot hand out an uncounted answer.
    """
    path = site.dir / AUDIT_LOG
    cap = site.config.privacy.max_audits
    entry = {"created": pd.Timestamp.now(tz="UTC").isoformat(), "kind": kind, "model_sha256": digest, "seed": seed}
    # Count and append under an exclusive lock: two queries arriving at once (two SuperNode
    # processes, two threads) must not both read "cap - 1" and both run.
    with path.open("a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            handle.seek(0)
            done = len(handle.read().splitlines())
            if done >= cap:
                raise AuditRefusedError(
                    f"site '{site.config.name}' has answered {done} audits, its cap (privacy.max_audits = {cap}); "
                    "audit and evaluation results are not differentially private, so the site's privacy officer "
                    "must raise the cap"
                )
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return done + 1
