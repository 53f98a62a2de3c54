"""The sampling service: researchers draw synthetic cohorts from a run's global model over HTTP.

``create_app(run_dir, settings)`` builds the FastAPI app; ``fedsynth serve RUN_DIR`` runs it on
uvicorn. Only the global model is read to answer a request, so every answer is post-processing
of the DP model and carries its privacy guarantee.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsynth.server.service.app import create_app
    from fedsynth.server.service.config import ServiceConfig, ServiceConfigError

__all__ = ["ServiceConfig", "ServiceConfigError", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: `fedsynth serve-token` imports service.auth alone and must not pay for torch and the
    # app (seconds of start-up) that importing this package would otherwise load.
    if name == "create_app":
        from fedsynth.server.service.app import create_app

        return create_app
    if name in ("ServiceConfig", "ServiceConfigError"):
        from fedsynth.server.service import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
