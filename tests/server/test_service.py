"""The sampling service over real HTTP: uvicorn on loopback, httpx clients, a real trained model.

Expected rows are computed with ``MCM.sample`` directly: the service promises that a request
returns exactly what ``fedsynth sample`` would for its seed, streamed in chunks of at most
``CHUNK_ROWS`` rows. Request parsing, /docs and the access log's start lines are tested in
``test_service_input.py``.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from fedsynth.cli import app as cli_app
from fedsynth.model.generators import generator_digest
from fedsynth.model.mcm import MCM
from fedsynth.model.persistence import model_digest
from fedsynth.server.run import RunDirectory
from fedsynth.server.service import ServiceConfig, ServiceConfigError, create_app
from fedsynth.server.service.auth import TokenFileError, TokenStore, add_token, hash_token, revoke_token
from fedsynth.server.service.sampling import CHUNK_ROWS
from fedsynth.server.service.served import ServiceStartError

CAP = CHUNK_ROWS + 2_000  # above one chunk, so capped requests also cover chunking
CONDITIONS = ["horTh=yes", "tgrade in {I,II}", "50<=age<=60", "time<1000"]


# -- fixtures ----------------------------------------------------------------------------------


def _write_run(root: Path, model: MCM, dp: bool) -> Path:
    """A minimal run directory: run.json, budget.jsonl of two sites over two rounds, the model
    (for ``dp``: saved and published as round 2's checkpoint, so the run's records show it DP),
    and an audit.json naming the model by its weights digest, as the sites do."""
    saved = copy.deepcopy(model)
    saved.differentially_private_ = dp
    saved.training_info_ = {"round": 2, "sites": ["site-a", "site-b"]}
    run = RunDirectory(root)
    run.initialise("run-test", saved.schema_, {"rounds": 2})
    records = [
        {"round": r, "site": s, "status": "ok", "target-epsilon": 4.0, "delta": 1e-3, "noise-multiplier": 1.1,
         "sample-rate": 0.1, "steps": 10, "num-examples": 300, "epsilon": eps}
        for r, (s, eps) in [(1, ("site-a", 1.5)), (1, ("site-b", 1.4)), (2, ("site-a", 2.5)), (2, ("site-b", 2.25))]
    ]  # fmt: skip
    run.append_budget(records)
    if dp:  # as the coordinator saves and publishes a round: its weights digest goes in the run's record
        info = saved.training_info_
        run.publish_model(run.save_checkpoint(2, saved.network_.state_dict(), saved.schema_, saved.config, info))
    else:
        saved.save(root / "model")
    audit = {"time": "2026-01-01T00:00:00+00:00", "model_sha256": generator_digest(saved), "sites": [], "failures": [],
             "complete": True, "worst": {"exact_matches": 0, "mia_auc_upper_ci": 0.55}}  # fmt: skip
    (root / "audit.json").write_text(json.dumps(audit), encoding="utf-8")
    return root


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on a real uvicorn bound to a free loopback port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, gbsg2_model: MCM) -> Path:
    return _write_run(tmp_path_factory.mktemp("run"), gbsg2_model, dp=False)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # A directory of its own: the module's fixtures may be set up again in one session.
    path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    return {"path": path, "alice": add_token(path, "alice"), "bob": add_token(path, "bob")}


@pytest.fixture(scope="module")
def base_url(run_dir: Path, tokens: dict[str, Any]) -> Iterator[str]:
    settings = ServiceConfig(tokens=tokens["path"], max_rows_per_request=CAP, allow_non_dp=True, allow_unsigned=True)
    with serving(create_app(run_dir, settings)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str, tokens: dict[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60) as c:
        yield c


def _frame(response: httpx.Response, fmt: str = "csv") -> pd.DataFrame:
    assert response.status_code == 200, response.text
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(response.content), keep_default_na=False)
    if fmt == "json":
        return pd.read_json(io.BytesIO(response.content), lines=True, dtype=False)
    return pq.read_table(io.BytesIO(response.content)).to_pandas()


def _sample(client: httpx.Client, **body: Any) -> pd.DataFrame:
    return _frame(client.post("/v1/sample", json=body), body.get("format", "csv"))


def _wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """The log line of a streamed response is written just after its last byte: poll briefly."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
    return result


def _log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "access.jsonl").read_text(encoding="utf-8").splitlines()]


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("path,method", [("/v1/sample", "POST"), ("/v1/model", "GET")])
def test_no_token_is_401_with_a_bearer_challenge(base_url: str, path: str, method: str) -> None:
    for headers in ({}, {"Authorization": "Basic YWxpY2U6eA=="}):
        response = httpx.request(method, base_url + path, json={"n": 1}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["detail"]


@pytest.mark.integration
def test_unknown_token_is_403(base_url: str, tokens: dict[str, Any]) -> None:
    for token in ("fsk_not-a-token", tokens["alice"] + "x", hash_token(tokens["alice"])):
        response = httpx.post(base_url + "/v1/sample", json={"n": 1}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 403, token
        assert "unknown or revoked token" in response.json()["detail"]


@pytest.mark.integration
def test_tokens_issued_and_revoked_while_serving(base_url: str, tokens: dict[str, Any]) -> None:
    token = add_token(tokens["path"], "carol")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(base_url + "/v1/sample", json={"n": 2}, headers=headers).status_code == 200
    revoke_token(tokens["path"], "carol")
    assert httpx.post(base_url + "/v1/sample", json={"n": 2}, headers=headers).status_code == 403


def test_tokens_file_keeps_only_hashes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    result = CliRunner().invoke(cli_app, ["serve-token", "add", str(path), "--name", "dora"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("fsk_") and len(token) > 40
    text = path.read_text(encoding="utf-8")
    assert token not in text and token[4:] not in text
    (entry,) = json.loads(text)["tokens"]
    assert (set(entry), entry["name"], entry["sha256"]) == (
        {"name", "sha256", "created", "expires"}, "dora", hash_token(token)
    )  # fmt: skip
    created, expires = (datetime.fromisoformat(entry[k]) for k in ("created", "expires"))
    assert expires - created == timedelta(days=90)  # the default validity
    assert os.stat(path).st_mode & 0o077 == 0  # readable by its owner only
    again = CliRunner().invoke(cli_app, ["serve-token", "add", str(path), "--name", "dora"])
    assert again.exit_code == 2 and "already has a token named 'dora'" in again.output


def test_token_store_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"tokens": []}', encoding="utf-8")
    with pytest.raises(TokenFileError, match="holds no token"):
        TokenStore(path)
    token = add_token(path, "erin")
    store = TokenStore(path)
    assert store.identify(token) == "erin" and store.identify(token[:-1]) is None
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenFileError, match="unreadable tokens file"):
        store.identify(token)
    path.unlink()
    with pytest.raises(TokenFileError, match="has disappeared"):
        store.identify(token)
    with pytest.raises(ValueError, match="use 1-64 letters"):
        add_token(path, "bad name")


@pytest.mark.integration
def test_an_expired_token_is_refused_and_says_so(base_url: str, tokens: dict[str, Any], run_dir: Path) -> None:
    token = add_token(tokens["path"], "frank", valid_days=1)
    document = json.loads(tokens["path"].read_text(encoding="utf-8"))
    entry = next(e for e in document["tokens"] if e["name"] == "frank")
    assert httpx.post(base_url + "/v1/sample", json={"n": 2}, headers={"Authorization": f"Bearer {token}"}).is_success
    entry["expires"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat(timespec="seconds")
    tokens["path"].write_text(json.dumps(document), encoding="utf-8")  # as if a day had passed
    response = httpx.post(base_url + "/v1/sample", json={"n": 2}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and f"token expired at {entry['expires']}" in response.json()["detail"]
    logged = _wait_for(lambda: [r for r in _log(run_dir) if r.get("auth") == "expired token"])
    assert logged[-1]["who"] == "frank" and logged[-1]["status"] == 403
    revoke_token(tokens["path"], "frank")


def test_token_validity_is_bounded_and_listed(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    for days in ("0", "400", "-1"):
        result = CliRunner().invoke(cli_app, ["serve-token", "add", str(path), "--name", "gil", "--days", days])
        assert result.exit_code == 2 and "a token is valid for more than 0 and at most 366" in result.output
    assert not path.exists()
    token = add_token(path, "gil", valid_days=7)
    store = TokenStore(path)
    expires = datetime.fromisoformat(store.entries()[0].expires)
    assert store.identify(token, now=expires - timedelta(seconds=1)) == "gil"
    assert store.identify(token, now=expires) is None and store.holder(token, now=expires).expired
    listed = CliRunner().invoke(cli_app, ["serve-token", "list", str(path)])
    assert listed.exit_code == 0 and "gil" in listed.output and "valid" in listed.output and token not in listed.output
    # A file written before tokens expired (no 'expires'): accepted until revoked.
    document = json.loads(path.read_text(encoding="utf-8"))
    del document["tokens"][0]["expires"]
    path.write_text(json.dumps(document), encoding="utf-8")
    assert TokenStore(path).identify(token, now=expires + timedelta(days=999)) == "gil"
    document["tokens"][0]["expires"] = "next tuesday"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(TokenFileError, match=r"tokens\[0\] \('gil'\) has expires = 'next tuesday'"):
        TokenStore(path)


# -- request validation ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "conditions,index,needle",
    [
        (["agee>3"], 0, "Did you mean 'age'?"),
        (["age>=60", "tgrade in {IV}"], 1, "allowed: I, II, III"),
        (["horTh=yes", "age >> 3"], 1, "use e.g."),
        (["50<=age<=60", "age>70"], 0, "contradict"),
        (["tgrade<2"], 0, "use 'tgrade=VALUE' or 'tgrade in {...}'"),
        (["age>=200"], 0, "outside the schema's bounds"),
        (["horTh=yes", "  "], 1, "empty condition"),
    ],
)
def test_bad_condition_is_422_naming_its_index_and_fix(
    client: httpx.Client, conditions: list[str], index: int, needle: str
) -> None:
    response = client.post("/v1/sample", json={"n": 5, "conditions": conditions})
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "conditions", index]
    assert needle in item["msg"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "body,loc,needle",
    [
        ({"n": 0}, ["body", "n"], "greater than or equal to 1"),
        ({"conditions": []}, ["body", "n"], "field 'n' is required"),
        ({"n": 5, "format": "xml"}, ["body", "format"], "'csv', 'parquet' or 'json'"),
        ({"n": 5, "condition": ["age>60"]}, ["body", "condition"], "takes n, conditions, seed, format"),
        ({"n": 5, "seed": -1}, ["body", "seed"], "greater than or equal to 0"),
        ({"n": 5, "conditions": "age>60"}, ["body", "conditions"], "send a JSON list of strings"),
    ],
)
def test_malformed_body_is_422_naming_the_field(
    client: httpx.Client, body: dict[str, Any], loc: list[Any], needle: str
) -> None:
    response = client.post("/v1/sample", json=body)
    assert response.status_code == 422
    items = {tuple(item["loc"]): item["msg"] for item in response.json()["detail"]}
    assert needle in items[tuple(loc)], items


@pytest.mark.integration
def test_row_cap_is_enforced_and_named(client: httpx.Client) -> None:
    response = client.post("/v1/sample", json={"n": CAP + 1})
    assert response.status_code == 422
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "n"]
    assert f"n={CAP + 1}" in item["msg"] and f"cap of {CAP}" in item["msg"] and "max_rows_per_request" in item["msg"]
    assert len(_sample(client, n=CAP, seed=1)) == CAP


# -- the rows ------------------------------------------------------------------------------------


def _violations(frame: pd.DataFrame) -> dict[str, int]:
    return {
        "horTh=yes": int((frame["horTh"] != "yes").sum()),
        "tgrade in {I,II}": int((~frame["tgrade"].isin(["I", "II"])).sum()),
        "50<=age<=60": int((~frame["age"].between(50, 60)).sum()),
        "time<1000": int((frame["time"] >= 1000).sum()),
    }


@pytest.mark.integration
def test_every_row_honours_equality_set_and_range_conditions(client: httpx.Client) -> None:
    unconditional = _sample(client, n=2_000, seed=5)
    assert all(_violations(unconditional).values()), "the conditions must bind on this model for the test to mean much"
    for fmt in ("csv", "json", "parquet"):
        frame = _sample(client, n=CHUNK_ROWS + 500, conditions=CONDITIONS, seed=5, format=fmt)
        assert len(frame) == CHUNK_ROWS + 500
        assert _violations(frame) == dict.fromkeys(_violations(frame), 0), fmt
        assert set(frame["tgrade"]) == {"I", "II"}  # both set members drawn, not one


@pytest.mark.integration
def test_same_seed_same_rows_as_the_cli(client: httpx.Client, gbsg2_model: MCM) -> None:
    first = _sample(client, n=20, conditions=CONDITIONS, seed=7)
    assert first.equals(_sample(client, n=20, conditions=CONDITIONS, seed=7))
    assert not first.equals(_sample(client, n=20, conditions=CONDITIONS, seed=8))
    expected = gbsg2_model.sample(20, CONDITIONS, seed=7)
    pd.testing.assert_frame_equal(first, expected, check_dtype=False)


@pytest.mark.integration
def test_large_requests_stream_in_reproducible_chunks(client: httpx.Client, gbsg2_model: MCM) -> None:
    body = {"n": CHUNK_ROWS + 1_000, "seed": 11}
    with client.stream("POST", "/v1/sample", json=body) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        content = response.read()
    frame = pd.read_csv(io.BytesIO(content), keep_default_na=False)
    assert frame.equals(_sample(client, **body))
    # The chunks are the model's own row groups: the whole answer is MCM.sample's rows.
    pd.testing.assert_frame_equal(frame, gbsg2_model.sample(CHUNK_ROWS + 1_000, seed=11), check_dtype=False)


@pytest.mark.integration
def test_formats_parse_back_to_the_same_rows(client: httpx.Client, run_dir: Path) -> None:
    body = {"n": 300, "conditions": ["tgrade in {II,III}"], "seed": 3}
    csv, json_lines = _sample(client, **body), _sample(client, **body, format="json")
    response = client.post("/v1/sample", json={**body, "format": "parquet"})
    parquet = _frame(response, "parquet")
    pd.testing.assert_frame_equal(csv, json_lines, check_dtype=False)
    pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    embedded = json.loads(pq.read_schema(io.BytesIO(response.content)).metadata[b"fedsynth.provenance"])
    assert embedded["model_sha256"] == model_digest(run_dir / "model")
    assert embedded["conditions"] == body["conditions"] and embedded["seed"] == 3


# -- load -----------------------------------------------------------------------------------------


@pytest.mark.integration
def test_concurrent_clients_get_their_own_rows(
    base_url: str, tokens: dict[str, Any], gbsg2_model: MCM, run_dir: Path
) -> None:
    """25 clients x 8 requests at once, with 97 different (seed, conditions) in rotation so that
    requests in flight together differ (each seed asked at least twice, by different clients);
    every response equals the single-request result."""
    variants = [[], CONDITIONS, ["tgrade=III"], ["age>=70", "cens=1"]]
    seeds = [100_000 + k for k in range(97)]

    def conditions_of(seed: int) -> list[str]:
        return variants[seed % len(variants)]

    async def run_client(index: int) -> list[tuple[int, int, str]]:
        token = tokens["alice" if index % 2 else "bob"]
        headers = {"Authorization": f"Bearer {token}"}
        results = []
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as c:
            for i in range(8):
                seed = seeds[(index * 8 + i) % len(seeds)]
                response = await c.post("/v1/sample", json={"n": 20, "conditions": conditions_of(seed), "seed": seed})
                results.append((seed, response.status_code, response.text))
        return results

    async def run_all() -> list[tuple[int, int, str]]:
        per_client = await asyncio.gather(*(run_client(index) for index in range(25)))
        return [result for results in per_client for result in results]

    started = time.perf_counter()
    results = asyncio.run(run_all())
    elapsed = time.perf_counter() - started
    print(f"\n25 clients x 8 requests of 20 rows: {elapsed:.1f} s ({len(results) / elapsed:.0f} requests/s)")
    assert [status for _, status, _ in results] == [200] * 200
    expected = {seed: gbsg2_model.sample(20, conditions_of(seed), seed=seed).to_csv(index=False) for seed in seeds}
    for seed, _, text in results:
        assert text == expected[seed], f"seed {seed} got other rows than a single request gets"
    assert len(set(expected.values())) == len(seeds)

    def logged() -> list[dict[str, Any]] | None:
        lines = [r for r in _log(run_dir) if r.get("seed") in expected and r["event"] == "end"]
        return lines if len(lines) == 200 else None

    lines = _wait_for(logged)
    assert all(line["status"] == 200 and line["conditions"] == conditions_of(line["seed"]) for line in lines)
    assert {line["who"] for line in lines} == {"alice", "bob"}


# -- access log, model card, schema ------------------------------------------------------------------


@pytest.mark.integration
def test_access_log_records_each_request_never_the_token(
    base_url: str, client: httpx.Client, run_dir: Path, tokens: dict[str, Any]
) -> None:
    body = {"n": 4, "conditions": ["horTh=yes"], "seed": 424242, "format": "json"}
    assert client.post("/v1/sample", json=body).status_code == 200
    assert client.post("/v1/sample", json={"n": 4, "seed": 424243, "conditions": ["agee>1"]}).status_code == 422
    assert httpx.post(base_url + "/v1/sample", json={"n": 4}).status_code == 401
    bad = httpx.post(base_url + "/v1/sample", json={"n": 4}, headers={"Authorization": "Bearer fsk_wrong-one"})
    assert bad.status_code == 403
    records = _wait_for(lambda: [r for r in _log(run_dir) if r.get("seed") == 424242 and r["event"] == "end"] or None)
    (ok,) = records
    assert ok["who"] == "alice" and ok["status"] == 200 and ok["completed"] is True
    assert (ok["n"], ok["conditions"], ok["format"], ok["path"]) == (4, ["horTh=yes"], "json", "/v1/sample")
    assert ok["time"].endswith("+00:00")
    (invalid,) = [r for r in _log(run_dir) if r.get("seed") == 424243]
    assert invalid["status"] == 422 and "agee" in invalid["error"] and invalid["who"] == "alice"
    tail = _log(run_dir)[-4:]
    assert {"status": 401, "auth": "no token"}.items() <= next(r for r in tail if r["status"] == 401).items()
    assert {"status": 403, "auth": "unknown token"}.items() <= next(r for r in tail if r["status"] == 403).items()
    assert "who" not in next(r for r in tail if r["status"] == 403)
    text = (run_dir / "access.jsonl").read_text(encoding="utf-8")
    for token in (tokens["alice"], tokens["bob"], "fsk_wrong-one"):
        assert token not in text and hash_token(token) not in text


@pytest.mark.integration
def test_a_stream_dropped_by_the_client_is_logged_incomplete(client: httpx.Client, run_dir: Path) -> None:
    with client.stream("POST", "/v1/sample", json={"n": CAP, "seed": 515151}) as response:
        first = next(response.iter_bytes())
    assert first.startswith(b"age,")
    (record,) = _wait_for(lambda: [r for r in _log(run_dir) if r.get("seed") == 515151 and r["event"] == "end"] or None)
    assert record["status"] == 200 and record["completed"] is False and record["who"] == "alice"


@pytest.mark.integration
def test_model_card_reports_rounds_sites_budget_and_audit(client: httpx.Client, run_dir: Path) -> None:
    card = client.get("/v1/model").json()
    assert card["model_sha256"] == model_digest(run_dir / "model")
    assert (card["run_id"], card["rounds"], card["sites"]) == ("run-test", 2, ["site-a", "site-b"])
    spent = {site["site"]: (site["epsilon_spent"], site["rounds_trained"]) for site in card["privacy"]["sites"]}
    assert spent == {"site-a": (2.5, 2), "site-b": (2.25, 2)}
    assert card["privacy"]["epsilon"] == 2.5 and card["privacy"]["delta"] == 1e-3
    assert card["audit"]["matches_model"] is True and card["audit"]["worst"]["mia_auc_upper_ci"] == 0.55
    assert card["evaluation"] is None
    assert card["max_rows_per_request"] == CAP and card["chunk_rows"] == CHUNK_ROWS
    assert "records" not in json.dumps(card["privacy"]["sites"])  # site sizes stay private


@pytest.mark.integration
def test_public_routes_schema_health_and_openapi(base_url: str, gbsg2_model: MCM, run_dir: Path) -> None:
    schema = httpx.get(base_url + "/v1/schema").json()
    assert [c["name"] for c in schema["columns"]] == gbsg2_model.schema_.names
    health = httpx.get(base_url + "/healthz").json()
    assert health == {"status": "ok", "model_sha256": model_digest(run_dir / "model"), "differentially_private": False}
    openapi = httpx.get(base_url + "/openapi.json").json()
    assert {"/v1/sample", "/v1/model", "/v1/schema", "/healthz"} <= set(openapi["paths"])
    assert openapi["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert httpx.get(base_url + "/docs").status_code == 200


# -- differential privacy labelling ---------------------------------------------------------------


def test_non_dp_model_is_refused_without_the_flag(run_dir: Path, tokens: dict[str, Any]) -> None:
    with pytest.raises(ServiceStartError, match="--allow-non-dp"):
        create_app(run_dir, ServiceConfig(tokens=tokens["path"], allow_unsigned=True))


@pytest.mark.integration
def test_answers_say_whether_the_model_is_dp(
    client: httpx.Client, tmp_path: Path, gbsg2_model: MCM, tokens: dict[str, Any]
) -> None:
    non_dp = client.post("/v1/sample", json={"n": 3})
    assert non_dp.headers["x-fedsynth-differentially-private"] == "false"
    assert non_dp.headers["x-fedsynth-notice"].startswith("NOT DIFFERENTIALLY PRIVATE")
    dp_run = _write_run(tmp_path / "dp-run", gbsg2_model, dp=True)
    with serving(create_app(dp_run, ServiceConfig(tokens=tokens["path"], allow_unsigned=True))) as url:
        headers = {"Authorization": f"Bearer {tokens['alice']}"}
        response = httpx.post(url + "/v1/sample", json={"n": 3, "format": "parquet"}, headers=headers)
    assert response.headers["x-fedsynth-differentially-private"] == "true"
    assert response.headers["x-fedsynth-epsilon"] == "2.5"
    assert response.headers["x-fedsynth-model-sha256"] == model_digest(dp_run / "model")
    embedded = json.loads(pq.read_schema(io.BytesIO(response.content)).metadata[b"fedsynth.provenance"])
    assert embedded["differentially_private"] is True and embedded["notice"].startswith("Differentially private")


# -- configuration and the command line ----------------------------------------------------------


def test_service_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "service.toml"
    path.write_text('[service]\ntokens = "tokens.json"\nmax_rows_per_request = 500\nport = 9000\n', encoding="utf-8")
    config = ServiceConfig.from_toml(path)
    assert (config.tokens, config.max_rows_per_request, config.port) == (tmp_path / "tokens.json", 500, 9000)
    assert config.with_overrides(port=None, max_rows_per_request=7).max_rows_per_request == 7
    path.write_text("[service]\nmax_rows_per_request = 0\nhost = 3\n", encoding="utf-8")
    with pytest.raises(ServiceConfigError, match=r"service\.max_rows_per_request: .*greater than or equal to 1"):
        ServiceConfig.from_toml(path)
    path.write_text('[service]\ntls_certfile = "a.pem"\n', encoding="utf-8")
    with pytest.raises(ServiceConfigError, match="tls_certfile and tls_keyfile go together"):
        ServiceConfig.from_toml(path)


def wait_until_serving(url: str, process: subprocess.Popen, describe: Callable[[], str] = str) -> None:
    """Poll ``url``/healthz until the `fedsynth serve` process answers (it must not exit; 120 s at most)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, describe()
        time.sleep(0.25)


@pytest.mark.integration
def test_fedsynth_serve_command(run_dir: Path, tokens: dict[str, Any], tmp_path: Path) -> None:
    """The CLI wires options through: a real `fedsynth serve` process, its --max-rows honoured."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "fedsynth.cli", "serve", str(run_dir), "--tokens", str(tokens["path"]),
               "--port", str(port), "--max-rows", "10", "--allow-non-dp", "--allow-unsigned"]  # fmt: skip
    with log.open("w") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"}
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, process, log.read_text)
        headers = {"Authorization": f"Bearer {tokens['bob']}"}
        assert httpx.post(url + "/v1/sample", json={"n": 10}, headers=headers).status_code == 200
        capped = httpx.post(url + "/v1/sample", json={"n": 11}, headers=headers)
        assert capped.status_code == 422 and "cap of 10" in capped.json()["detail"][0]["msg"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "NOT DIFFERENTIALLY PRIVATE" in log.read_text()


def test_fedsynth_serve_refuses_a_non_dp_model_without_the_flag(run_dir: Path, tokens: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli_app, ["serve", str(run_dir), "--tokens", str(tokens["path"])])
    assert result.exit_code == 2
    assert "trained without differential privacy" in result.output


# -- release sign-off --------------------------------------------------------------------------------


def _sign(run_dir: Path, outcome: str) -> None:
    """RUN_DIR/signoff.json as `fedsynth signoff` writes it, with ``outcome`` as the verdict."""
    from fedsynth.release.policy import load_policy
    from fedsynth.release.signoff import Verdict, write_signoff

    verdict = Verdict(run_id="r", policy="p", passed=outcome == "PASS", outcome=outcome, rules=[], time="t")
    write_signoff(run_dir, verdict, load_policy(None), None, None)


def test_only_a_model_with_a_pass_sign_off_is_served(tmp_path: Path, gbsg2_model: MCM, tokens: dict[str, Any]) -> None:
    dp_run = _write_run(tmp_path / "dp-run", gbsg2_model, dp=True)
    settings = ServiceConfig(tokens=tokens["path"])
    with pytest.raises(ServiceStartError, match="signoff.json is missing.*--allow-unsigned"):
        create_app(dp_run, settings)
    for outcome in ("FAIL", "INCONCLUSIVE"):
        _sign(dp_run, outcome)
        with pytest.raises(ServiceStartError, match=f"verdict is {outcome}, not PASS"):
            create_app(dp_run, settings)
    _sign(dp_run, "PASS")
    with serving(create_app(dp_run, settings)) as url:
        headers = {"Authorization": f"Bearer {tokens['alice']}"}
        card = httpx.get(url + "/v1/model", headers=headers).json()
    assert card["release"]["outcome"] == "PASS" and card["release"]["matches_model"] is True
    # A PASS of another model (this run's model replaced after sign-off) does not count.
    other = _write_run(tmp_path / "other", gbsg2_model, dp=True)
    _sign(other, "PASS")
    record = json.loads((other / "signoff.json").read_text())
    record["model_sha256"] = "0" * 64
    (other / "signoff.json").write_text(json.dumps(record))
    with pytest.raises(ServiceStartError, match="of another model"):
        create_app(other, settings)


def test_allow_unsigned_serves_and_records_it(tmp_path: Path, gbsg2_model: MCM, tokens: dict[str, Any]) -> None:
    dp_run = _write_run(tmp_path / "dp-run", gbsg2_model, dp=True)
    settings = ServiceConfig(tokens=tokens["path"], allow_unsigned=True)
    with serving(create_app(dp_run, settings)) as url:
        headers = {"Authorization": f"Bearer {tokens['alice']}"}
        card = httpx.get(url + "/v1/model", headers=headers).json()
    assert card["release"]["outcome"] is None and "signoff.json is missing" in card["release"]["problem"]
    lines = [json.loads(line) for line in settings.access_log_path(dp_run).read_text().splitlines()]
    assert lines[0]["event"] == "unsigned-model-served"
