"""A fedsynth command run in a fresh interpreter: its output, and which heavy libraries it loaded."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "opacus", "flwr", "ray", "lifelines")
_RUN_AND_LIST_IMPORTS = f"""
import sys
from typer.testing import CliRunner
from fedsynth.cli import app
done = CliRunner().invoke(app, sys.argv[1:])
assert done.exit_code == 0, done.output
print(done.output)
print("imported:", *[m for m in {HEAVY!r} if m in sys.modules])
"""


def run_in_fresh_interpreter(args: list[str]) -> tuple[str, list[str]]:
    """``fedsynth ARGS`` (it must exit 0): its output and the libraries of ``HEAVY`` it imported."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_IMPORTS, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    output, imported = done.stdout.rsplit("imported:", 1)
    return output, imported.split()
