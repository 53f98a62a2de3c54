"""What a site's failure may tell the coordinator, and how the coordinator reads it back.

Flower sends an exception's text from the site to the coordinator. Most of a site's errors
would carry its data (a validation error names rows and their values), so a site sends only
the error's type name for them. Two kinds are worth more and can be told safely:

* a data validation error, as ``site-0: data.csv column 'bmi': values are not numbers
  (3 rows); fix: ...``: the column, the rule broken, how many rows break it and the fix, all
  of which the public schema or the reply's record count already disclose; never a row
  number or a value;
* a refusal for too few training records: counts and the minimum only;
* a privacy-ledger integrity refusal: that it happened, and the command that explains it at
  the site (the site's own message names its local paths, which stay at the site).

On the coordinator, Flower wraps that text in its own error reason (with Ray's traceback in
the simulation engine); :func:`site_reason` takes the site's text back out of it.
"""

from __future__ import annotations

import re
from pathlib import Path

from fedsynth.client.ledger_chain import LedgerIntegrityError
from fedsynth.data.minimum import TooFewRecordsError
from fedsynth.data.validation import DataValidationError, Problem


def _problem_line(problem: Problem, data_name: str) -> str:
    # Problem.__str__ shows rows and values: only these fields may leave the site.
    where = data_name if problem.column == "(all)" else f"{data_name} column '{problem.column}'"
    count = f" ({problem.count} row{'s' if problem.count != 1 else ''})" if problem.count else ""
    return f"{where}: {problem.message}{count}; fix: {problem.fix}"


def shareable_message(exc: BaseException, site_name: str, data_name: str) -> str | None:
    """The text ``exc`` may carry off the site, or None if only its type name may."""
    if isinstance(exc, DataValidationError):
        lines = [f"{site_name}: {_problem_line(problem, data_name)}" for problem in exc.problems]
        return "\n".join(lines)
    if isinstance(exc, TooFewRecordsError):
        return str(exc)
    if isinstance(exc, LedgerIntegrityError):
        return (
            f"{site_name}: refused to train: its privacy ledger failed its integrity check (missing, edited, "
            "rolled back or replaced), so its spend could be under-counted; the site's operator runs "
            "`fedsynth ledger verify SITE_DIR` at the site to see why and restores the site's own backup"
        )
    return None


def site_identity(site_dir: Path | None) -> tuple[str, str]:
    """The site's name and its data file's name, from its ``site.toml``; placeholders if unreadable."""
    from fedsynth.client.config import SITE_FILE, SiteConfig

    try:
        assert site_dir is not None
        config = SiteConfig.from_toml(site_dir / SITE_FILE)
    except Exception:  # the error being reported may be this very file's
        return "this site", "its data"
    return config.name, config.data.name if config.data else "its data"


# Flower's reasons: "<class 'X'>:<'TEXT'>" (deployment) and, in the simulation engine, Ray's
# traceback ending in "Exception ClientAppException occurred. Message: TEXT'>".
_SIMULATION = re.compile(r"ClientAppException occurred\. Message: (.*?)'>\s*$", re.DOTALL)
_DEPLOYMENT = re.compile(r"^<class '[\w.]+'>:<'(.*)'>\s*$", re.DOTALL)


def site_reason(reason: str) -> str:
    """The site's own text inside a Flower error reason; the reason unchanged if it has none."""
    for pattern in (_SIMULATION, _DEPLOYMENT):
        found = pattern.search(reason)
        if found:
            return found.group(1).strip()
    return reason.strip()
