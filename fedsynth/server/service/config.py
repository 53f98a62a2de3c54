"""The sampling service's settings, from a TOML file and/or command-line options.

The coordinator keeps them in one ``[service]`` table; options given to ``fedsynth serve``
override the file:

    [service]
    host = "127.0.0.1"
    port = 8000
    tokens = "tokens.json"          # from `fedsynth serve-token add`; relative to this file
    max_rows_per_request = 100000
    allow_non_dp = false            # serve a model trained without DP (labelled as such)
    allow_unsigned = false          # serve a model without a PASS release sign-off (logged)
    # access_log = "access.jsonl"   # default RUN_DIR/access.jsonl
    # tls_certfile = "server.pem"   # serve HTTPS (tokens must not cross a network in clear text)
    # tls_keyfile = "server.key"
    # max_concurrent_chunks = 2     # default: the machine's CPU count
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsynth.config_files import read_toml, validate_sections
from fedsynth.errors import UserError

ACCESS_LOG = "access.jsonl"


class ServiceConfigError(UserError, ValueError):
    """The service configuration is invalid or incomplete; the message names the field and the fix."""


class ServiceConfig(BaseModel):
    """How the sampling service listens, whom it serves and how much one request may ask."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", min_length=1, description="interface to bind; loopback unless behind TLS")
    port: int = Field(8000, ge=1, le=65535)
    tokens: Path | None = Field(None, description="tokens file (names and SHA-256 hashes); required to serve")
    # A cap bounds one request's CPU time and memory (Parquet is built in memory) so that one
    # researcher cannot starve the others; larger cohorts are several requests with other seeds.
    max_rows_per_request: int = Field(100_000, ge=1, le=10_000_000)
    # Refusing non-DP models by default keeps a model from `fedsynth fit` (which may have
    # memorised its training rows) from being served by accident.
    allow_non_dp: bool = False
    # A model whose release the board has not signed off (fedsynth signoff: PASS, or a forced
    # release) is not served unless asked for; the access log and /v1/model say so.
    allow_unsigned: bool = False
    access_log: Path | None = Field(None, description=f"append-only JSON lines; default RUN_DIR/{ACCESS_LOG}")
    # Chunks are sampled on worker threads; more at once than there are cores only adds latency
    # to every stream, and bounds memory under a burst of requests.
    max_concurrent_chunks: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)

    tls_certfile: Path | None = Field(None, description="PEM certificate: serve HTTPS")
    tls_keyfile: Path | None = Field(None, description="PEM private key of tls_certfile")

    @model_validator(mode="after")
    def _tls_pair(self) -> ServiceConfig:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: give both, or neither for plain HTTP")
        return self

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "service config") -> ServiceConfig:
        """Validate a ``[service]`` document, naming every bad field as ``service.field``."""
        return validate_sections(cls, data, main="service", sections=(), error_type=ServiceConfigError, source=source)

    @classmethod
    def from_toml(cls, path: str | Path) -> ServiceConfig:
        """Read a TOML file; relative paths in it are relative to the file, as an operator expects."""
        path = Path(path)
        config = cls.from_dict(read_toml(path, ServiceConfigError, "service config"), source=str(path))
        updates = {
            field: (path.parent / value).resolve()
            for field in ("tokens", "access_log", "tls_certfile", "tls_keyfile")
            if (value := getattr(config, field)) is not None and not value.is_absolute()
        }
        return config.model_copy(update=updates)

    def with_overrides(self, **overrides: Any) -> ServiceConfig:
        """This config with the given fields replaced (None means: keep), validated again."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        return ServiceConfig.from_dict({"service": {**self.model_dump(), **given}}, source="service options")

    def access_log_path(self, run_dir: Path) -> Path:
        return self.access_log if self.access_log is not None else Path(run_dir) / ACCESS_LOG
