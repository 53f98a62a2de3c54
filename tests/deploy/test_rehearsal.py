"""deploy/rehearse.sh: the runbook's commands, in its order, bring up a coordinator and three
sites as supervised processes, train, survive a coordinator crash (coming back with a renewed
certificate), audit, evaluate, and tear everything down."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedsynth.client.slope_release import trained_rounds
from fedsynth.deploy.processes import running_with_env
from fedsynth.server.run import RunDirectory

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "rehearse.sh"


def test_the_runbook_rehearsed_by_its_script_trains_audits_and_leaves_nothing_running(tmp_path) -> None:
    work = tmp_path / "rehearsal"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(SCRIPT), str(work)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    steps = [line.split(" ", 2)[2] for line in done.stdout.splitlines() if line.startswith("== ")]
    assert [s.split(".")[0].split(" ")[0] for s in steps] == ["0", "1", "2", "3", "4", "recover", "5", "tear"]
    # The coordinator was killed after round 1 and came back with a renewed certificate; the run,
    # submitted again, resumed from its checkpoint, and the SuperNodes reconnected on their own.
    assert "new SuperLink certificate certs/server.pem" in done.stdout
    # Watched mid-run (runbook section 4): the run listed as running, the spend after round 1.
    watched = done.stdout.split("watching it", 1)[1].split("== ", 1)[0]
    assert "running" in watched.lower() and "site-0" in watched
    resumed = re.search(r"Resuming run \S+ after round (\d+) ", (work / "logs" / "run-train.log").read_text())
    assert resumed is not None
    # A site that trained a round the crash interrupted spent it, and spends again when it is
    # repeated: the rounds its 3-round plan no longer covers are refused by its ledger, never run
    # (a round that some sites still answer is aggregated from them and checkpointed).
    rehearsal = RunDirectory(work / "runs" / "rehearsal")
    latest = rehearsal.latest_checkpoint().round  # the slope release's, where every site could afford it
    last = trained_rounds(latest) or latest
    assert int(resumed.group(1)) <= last <= 3
    # Every site requires SecAgg+ (a plain round would be refused), so every round went through
    # it: each one the resumed run checkpointed was securely aggregated (a round aggregated from
    # fewer sites than min_sites also completes SecAgg+, but is not checkpointed).
    secure_rounds = (work / "logs" / "run-train.log").read_text().count("Secure aggregation completed")
    assert secure_rounds >= last - int(resumed.group(1))
    assert all("require_secure_aggregation = true" in (work / f"site-{i}" / "site.toml").read_text() for i in range(3))
    records = rehearsal.budget_records()
    for late in range(last + 1, 4):
        refusals = [r for r in records if r["round"] == late]
        assert len(refusals) == 3 and any("BudgetExceededError" in str(r) for r in refusals), refusals
    assert done.stdout.count("all 8 checks passed") == 3  # `fedsynth site check` at every site
    run = work / "runs" / "rehearsal"
    budget = json.loads((run / "budget.json").read_text())
    assert sorted(s["site"] for s in budget["sites"]) == ["site-0", "site-1", "site-2"]
    assert all(0 < s["epsilon_spent"] <= s["target_epsilon"] for s in budget["sites"])
    audit = json.loads((run / "audit.json").read_text())
    assert audit["complete"] and [s["site"] for s in audit["sites"]] == ["site-0", "site-1", "site-2"]
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["complete"] and evaluation["horizons"] == [365.0, 730.0]
    assert [s["site"] for s in evaluation["sites"]] == ["site-0", "site-1", "site-2"]
    # Nothing the script started (SuperLink, gateway, SuperNodes, SuperExecs, app processes) survives it.
    left = running_with_env("FLWR_HOME", str(work / "flwr-home"))
    assert not left, f"processes of the rehearsal outlived it: {left}"
