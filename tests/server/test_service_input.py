"""The sampling service's input handling: authentication before the body is read, strict
types, a /docs page that loads nothing from elsewhere, and an access-log line that survives a
server killed mid-stream."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedsynth.model.mcm import MCM
from fedsynth.server.service import ServiceConfig, create_app
from fedsynth.server.service.auth import add_token
from fedsynth.server.service.models import MAX_BODY_BYTES
from tests.server.test_service import _log, _wait_for, _write_run, serving, wait_until_serving

pytestmark = pytest.mark.integration
BAD_BODIES = [b"{not json", b'{"n": true}', b'{"n": "5"}', b"", b"[" * 10_000, b" " * (MAX_BODY_BYTES + 1)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, gbsg2_model: MCM) -> Path:
    return _write_run(tmp_path_factory.mktemp("run"), gbsg2_model, dp=False)


@pytest.fixture(scope="module")
def tokens_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("input-tokens") / "tokens.json"  # not test_service's file


@pytest.fixture(scope="module")
def token(tokens_path: Path) -> str:
    return add_token(tokens_path, "alice")


@pytest.fixture(scope="module")
def base_url(run_dir: Path, tokens_path: Path, token: str) -> Iterator[str]:
    settings = ServiceConfig(tokens=tokens_path, max_rows_per_request=50_000, allow_non_dp=True, allow_unsigned=True)
    with serving(create_app(run_dir, settings)) as url:
        yield url


def _post(base_url: str, content: bytes, token: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(base_url + "/v1/sample", content=content, headers=headers, timeout=60)


@pytest.mark.parametrize("content", BAD_BODIES, ids=["invalid-json", "bool", "string", "empty", "deep", "huge"])
def test_no_token_is_401_whatever_the_body(base_url: str, content: bytes) -> None:
    response = _post(base_url, content)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert _post(base_url, content, token="fsk_not-a-token").status_code == 403


@pytest.mark.parametrize(
    "body,field",
    [
        ({"n": True}, "n"),
        ({"n": "5"}, "n"),
        ({"n": 5.0}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": 5, "seed": "7"}, "seed"),
        ({"n": 5, "seed": False}, "seed"),
        ({"n": 5, "conditions": [1]}, "conditions[0]"),
    ],
)
def test_strict_types_are_422_naming_the_field(base_url: str, token: str, body: dict[str, Any], field: str) -> None:
    response = _post(base_url, json.dumps(body).encode(), token)
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    loc = ["body", *(int(part) if part.isdigit() else part for part in re.split(r"[\[\]]+", field) if part)]
    assert item["loc"] == loc
    assert item["msg"].startswith(f"field '{field}': ") and "send a JSON" in item["msg"]


def test_a_body_too_large_is_413_and_a_good_one_still_answers(base_url: str, token: str) -> None:
    response = _post(base_url, b" " * (MAX_BODY_BYTES + 1), token)
    assert response.status_code == 413
    assert str(MAX_BODY_BYTES) in response.json()["detail"][0]["msg"]
    answer = _post(base_url, b'{"n": 3, "seed": 1}', token)
    assert answer.status_code == 200 and len(answer.text.splitlines()) == 4


def test_no_page_loads_anything_from_elsewhere(base_url: str) -> None:
    docs = httpx.get(base_url + "/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert docs.headers["content-security-policy"].startswith("default-src 'none'")
    assert "/v1/sample" in docs.text and "<code>n</code>" in docs.text  # the body's fields are documented
    openapi = httpx.get(base_url + "/openapi.json")
    assert openapi.json()["paths"]["/v1/sample"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    for page in (docs, openapi):
        assert not re.search(r"https?://", page.text), re.search(r".{40}https?://.{40}", page.text)
        assert "<script" not in page.text
    for path in ("/redoc", "/docs/oauth2-redirect"):
        assert httpx.get(base_url + path).status_code == 404


def test_a_stream_logs_its_start_and_the_rows_sent(base_url: str, token: str, run_dir: Path) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"n": 50_000, "seed": 616161}
    with httpx.stream("POST", base_url + "/v1/sample", json=body, headers=headers, timeout=120) as response:
        next(response.iter_bytes())

    def both_lines() -> list[dict[str, Any]] | None:
        lines = [r for r in _log(run_dir) if r.get("seed") == 616161]
        return lines if len(lines) == 2 else None

    start, end = _wait_for(both_lines)
    assert (start["event"], end["event"], start["id"]) == ("start", "end", end["id"])
    assert (start["who"], start["n"], start["status"]) == ("alice", 50_000, 200)
    assert end["completed"] is False and 0 < end["rows"] < 50_000


def test_a_killed_servers_log_still_has_the_stream(run_dir: Path, tokens_path: Path, token: str) -> None:
    """SIGKILL mid-stream: no end line can be written, but the start line already is."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "fedsynth.cli", "serve", str(run_dir), "--tokens", str(tokens_path),
               "--port", str(port), "--max-rows", "100000", "--allow-non-dp", "--allow-unsigned"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process)
        body = {"n": 100_000, "seed": 717171, "conditions": ["horTh=yes"]}
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("POST", url + "/v1/sample", json=body, headers=headers, timeout=120) as r:
            assert next(r.iter_bytes()).startswith(b"age,")
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    (start,) = [r for r in _log(run_dir) if r.get("seed") == 717171 and r["event"] == "start"]
    assert (start["who"], start["n"], start["conditions"], start["status"]) == ("alice", 100_000, ["horTh=yes"], 200)
