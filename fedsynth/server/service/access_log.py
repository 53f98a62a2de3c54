"""The service's append-only access log: who asked for what, when, and how it ended.

Every HTTP request gets one JSON line when its response has been sent (or has failed):
``"event": "end"``, with the bytes and, for a sample, the rows handed to the server. A
response that carries rows also gets a ``"event": "start"`` line just before its first byte,
with who asked for how many rows: a server killed mid-stream (SIGKILL, power loss) cannot
write the end line, and its start line then still records that up to ``n`` rows may have
left. Both lines carry the same ``id``. The token is never written: requests are attributed
to the token's name. Lines are flushed and fsynced one by one, as the budget record is: the
log is evidence for the release board of what left the network.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Keys a route may put in request.state to be logged with the request (never the token).
LOGGED_STATE = ("who", "auth", "n", "conditions", "seed", "format", "error")


class RowCounter:
    """Rows of a response handed on to be sent; the route's encoder counts, the log reads."""

    def __init__(self) -> None:
        self.rows = 0


class AccessLog:
    """Appends JSON lines to one file; safe to call from several threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Fail at start-up, not at the first request, if the log cannot be written.
        with self.path.open("a", encoding="utf-8"):
            pass

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


class AccessLogMiddleware:
    """ASGI middleware logging every HTTP request once its response is complete or aborted."""

    def __init__(self, app: ASGIApp, log: AccessLog) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, when = time.monotonic(), datetime.now(UTC).isoformat(timespec="milliseconds")
        outcome: dict[str, Any] = {"id": secrets.token_hex(8), "status": None, "bytes": 0, "completed": False}

        def record(event: str) -> dict[str, Any]:
            state = scope.get("state", {})
            client = scope.get("client")
            counter = state.get("rows")
            return {
                "event": event,
                "id": outcome["id"],
                "time": when,
                "client": client[0] if client else None,
                "method": scope["method"],
                "path": scope["path"],
                # No response started: the app raised, and the server answers 500.
                "status": outcome["status"] if outcome["status"] is not None else 500,
                **{key: state[key] for key in LOGGED_STATE if key in state},
                **({"rows": counter.rows} if isinstance(counter, RowCounter) and event == "end" else {}),
            }

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                if message["status"] == 200 and isinstance(scope.get("state", {}).get("rows"), RowCounter):
                    self.log.write(record("start"))  # before the first row leaves
            elif message["type"] == "http.response.body":
                outcome["bytes"] += len(message.get("body", b""))
                outcome["completed"] = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            end = record("end")
            end.update(
                completed=outcome["completed"],
                bytes=outcome["bytes"],
                duration_ms=round((time.monotonic() - started) * 1000, 1),
            )
            self.log.write(end)
