"""Bearer tokens for the sampling service, stored as SHA-256 hashes only.

A token is 256 random bits, shown once when issued; the tokens file keeps its holder's name
and the token's SHA-256. A stolen tokens file therefore grants nothing, and the hash of a
high-entropy secret needs no salt or slow KDF (nothing to brute-force). The file is re-read
when it changes, so issuing or revoking a token needs no restart. Every token issued expires
(``DEFAULT_VALID_DAYS`` unless chosen); an entry without ``expires`` (written before expiry
existed) is accepted until revoked.

    {"tokens": [{"name": "alice", "sha256": "9f86d0...", "created": "2026-11-22T13:00:00+00:00",
                 "expires": "2027-02-20T13:00:00+00:00"}]}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fedsynth.data.io import write_text
from fedsynth.errors import UserError

TOKEN_PREFIX = "fsk_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# A quarter: a leaked token stops working within one review cycle of the data-access agreement.
DEFAULT_VALID_DAYS = 90
MAX_VALID_DAYS = 366


class TokenFileError(UserError, ValueError):
    """The tokens file is missing, unreadable or malformed; the message says how to fix it."""


class TokenRequestError(UserError, ValueError):
    """A token cannot be issued or revoked as asked (name, validity); the message says why."""


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    created: str
    expires: str | None = None

    def expired(self, now: datetime | None = None) -> bool:
        if self.expires is None:
            return False
        return (now or datetime.now(UTC)) >= datetime.fromisoformat(self.expires)


@dataclass(frozen=True)
class Holder:
    """Whose token a request carried, and whether it has expired."""

    name: str
    expires: str | None
    expired: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def read_tokens(path: Path) -> list[TokenEntry]:
    """Entries of a tokens file; every problem names the file and the fix."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenFileError(
            f"tokens file not found: {path}; issue a token with `fedsynth serve-token add {path} --name NAME`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenFileError(
            f"{path}: unreadable tokens file ({exc}); re-create it with `fedsynth serve-token add`"
        ) from None
    entries = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise TokenFileError(f'{path}: expected {{"tokens": [...]}}; re-create it with `fedsynth serve-token add`')
    parsed = []
    for i, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
        ):
            raise TokenFileError(f"{path}: tokens[{i}] needs a 'name' and a 64-hex-digit 'sha256'")
        expires = entry.get("expires")
        try:
            if expires is not None and datetime.fromisoformat(expires).tzinfo is None:
                raise ValueError("no time zone")
        except (TypeError, ValueError):
            raise TokenFileError(
                f"{path}: tokens[{i}] ('{entry['name']}') has expires = {expires!r}, not an ISO 8601 time with a "
                "time zone; revoke it and issue a new token with `fedsynth serve-token add`"
            ) from None
        parsed.append(TokenEntry(entry["name"], entry["sha256"], str(entry.get("created", "")), expires))
    return parsed


def _write_tokens(path: Path, entries: list[TokenEntry]) -> None:
    rows = [{k: v for k, v in entry.__dict__.items() if v is not None} for entry in entries]
    document: dict[str, Any] = {"tokens": rows}
    # write_text goes through mkstemp, so the file is created readable by its owner only.
    write_text(path, json.dumps(document, indent=2) + "\n")


def add_token(path: str | Path, name: str, valid_days: float = DEFAULT_VALID_DAYS) -> str:
    """Issue a token for ``name`` valid ``valid_days``: store its hash in ``path`` (created if
    absent); return the token. The token itself is never written anywhere; whoever loses it gets
    a new one.
    """
    path = Path(path)
    if not NAME_PATTERN.match(name):
        raise TokenRequestError(
            f"token name '{name}': use 1-64 letters, digits or _.@- (it is written to the access log)"
        )
    if not 0 < valid_days <= MAX_VALID_DAYS:
        raise TokenRequestError(f"--days {valid_days:g}: a token is valid for more than 0 and at most {MAX_VALID_DAYS}")
    entries = read_tokens(path) if path.exists() else []
    if any(entry.name == name for entry in entries):
        raise TokenRequestError(f"{path} already has a token named '{name}'; choose another name or revoke it first")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC).replace(microsecond=0)
    expires = (now + timedelta(days=valid_days)).isoformat(timespec="seconds")
    entries.append(TokenEntry(name, hash_token(token), now.isoformat(timespec="seconds"), expires))
    _write_tokens(path, entries)
    return token


def revoke_token(path: str | Path, name: str) -> None:
    """Remove ``name``'s token; a running service stops accepting it at its next request."""
    path = Path(path)
    entries = read_tokens(path)
    kept = [entry for entry in entries if entry.name != name]
    if len(kept) == len(entries):
        known = ", ".join(entry.name for entry in entries) or "none"
        raise TokenRequestError(f"{path} has no token named '{name}'; tokens: {known}")
    _write_tokens(path, kept)


class TokenStore:
    """Answers "whose token is this?" from a tokens file, re-reading it when it changes.

    A file that becomes unreadable while serving raises :class:`TokenFileError` on every
    request (fail closed) rather than keeping stale, possibly revoked, tokens.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: list[TokenEntry] = []
        self._reload()
        if not self._entries:
            raise TokenFileError(
                f"{self.path} holds no token, so nobody could use the service; "
                f"issue one with `fedsynth serve-token add {self.path} --name NAME`"
            )

    def _reload(self) -> None:
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._stamp = None
                raise TokenFileError(f"tokens file {self.path} has disappeared; restore it") from None
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._entries = read_tokens(self.path)
                self._stamp = stamp

    def holder(self, token: str, now: datetime | None = None) -> Holder | None:
        """``token``'s holder (expired or not), or None; compares against every entry in constant time."""
        self._reload()
        digest = hash_token(token)
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.sha256, digest):
                found = Holder(entry.name, entry.expires, entry.expired(now))
        return found

    def identify(self, token: str, now: datetime | None = None) -> str | None:
        """The name of the holder of ``token`` if it is known and has not expired, else None."""
        found = self.holder(token, now)
        return None if found is None or found.expired else found.name

    def entries(self) -> list[TokenEntry]:
        self._reload()
        return list(self._entries)
