"""fedsynth: federated, differentially private synthetic clinical survival data."""

__version__ = "0.1.0"
