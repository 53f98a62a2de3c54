"""`python -m fedsynth.cli`."""

import sys

from fedsynth.cli import app

sys.exit(app())
