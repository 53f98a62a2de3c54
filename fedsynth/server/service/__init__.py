"""The sampling service: researchers draw synthetic cohorts from a run's global model over HTTP.

``create_app(run_dir, settings)`` builds the FastAPI app; ``fedsynth serve RUN_DIR`` runs it on
uvicorn. Only the global model is read to answer a request, so every answer is post-processing
of the DP model and carries its privacy guarantee.
"""

from fedsynth.server.service.app import create_app
from fedsynth.server.service.config import ServiceConfig, ServiceConfigError

__all__ = ["ServiceConfig", "ServiceConfigError", "create_app"]
