"""fedsynth: federated, differentially private synthetic clinical survival data."""

import os

__version__ = "0.1.0"

# Flower sends a usage event (platform, a machine id) to its own servers from every process it
# starts unless told not to; nothing but what the runbook lists may leave a hospital. Set before
# any Flower import, and inherited by every process fedsynth starts. FLWR_TELEMETRY_ENABLED=1
# set by an operator is kept.
TELEMETRY_ENV = "FLWR_TELEMETRY_ENABLED"
os.environ.setdefault(TELEMETRY_ENV, "0")
