"""The runbook in containers: deploy/container/rehearse.sh brings up a coordinator and three sites
from the image, trains two rounds under SecAgg+ and tears everything down.

It needs a container engine and the built image (deploy/container/install-engine.sh, then
build.sh), which take minutes to set up and are not part of `make test`'s set-up, so it runs
only when asked (FEDSYNTH_CONTAINER_TESTS=1) and otherwise says what it needs and skips.
docs/research/2026-12-05-containers.md records its runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "container" / "rehearse.sh"
IMAGE = os.environ.get("FEDSYNTH_IMAGE", "localhost/fedsynth:latest")

pytestmark = pytest.mark.integration


def _containers() -> list[str]:
    names = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout
    return [name for name in names.split() if name.startswith("fedsynth-")]


def _image_present() -> bool:
    if os.environ.get("FEDSYNTH_CONTAINER_TESTS") != "1":
        return False
    if not (shutil.which("podman") and shutil.which("podman-compose")):
        return False
    return subprocess.run(["podman", "image", "exists", IMAGE], capture_output=True).returncode == 0


@pytest.mark.skipif(
    not _image_present(),
    reason=f"runs with FEDSYNTH_CONTAINER_TESTS=1, podman, podman-compose and the image {IMAGE} "
    "(deploy/container/install-engine.sh, then build.sh)",
)
def test_the_runbook_in_containers_trains_under_secagg_and_tears_down(tmp_path) -> None:
    work = tmp_path / "containers"
    before = set(_containers())
    done = subprocess.run(["bash", str(SCRIPT), str(work), "3", IMAGE], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.count("all 8 checks passed") == 3  # every site's pre-flight, inside the image
    assert "Secure aggregation completed" in (work / "logs" / "run-train.log").read_text()
    assert (work / "coordinator" / "runs" / "containers" / "model" / "manifest.json").exists()
    assert done.stdout.count("epsilon spent") == 3  # each site's own status, read in its container
    assert set(_containers()) <= before  # every container the rehearsal started is gone
