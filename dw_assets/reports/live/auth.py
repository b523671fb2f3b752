"""Access tokens of the live report server: one per client viewer, or an operator's (every client and the
portfolio). Kept in `$DW_HOME/reports/live_tokens.json` (mode 0600) as salted scrypt hashes; the token itself is
printed once, when it is made, and never stored or logged.

A token reads `dwr_<id>_<secret>`: the id finds the entry without trying every hash, the secret is checked with
scrypt and a constant-time compare.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dw_assets.identifiers import validate_client_name

from ..engine import PORTFOLIO_SCOPE

TOKENS_FILE = Path("reports") / "live_tokens.json"
# scrypt cost: ~30-60 ms per check on this machine; verified tokens are remembered in memory (keyed by a keyed
# hash), so a page polling every second does not pay it again.
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}
OPERATOR = "operator"
CLIENT = "client"


class TokenError(ValueError):
    """A token command that cannot be done (unknown id, bad client name)."""


@dataclass(frozen=True)
class Grant:
    """What a verified token may see."""

    token_id: str
    role: str  # CLIENT or OPERATOR
    client: str | None  # the one client of a CLIENT grant

    def can_view(self, scope: str) -> bool:
        if self.role == OPERATOR:
            return True
        return scope != PORTFOLIO_SCOPE and scope == self.client

    def describe(self) -> str:
        return "operator (every client and the portfolio)" if self.role == OPERATOR else f"client {self.client}"


def tokens_path(home: Path) -> Path:
    return Path(home) / TOKENS_FILE


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, maxmem=64 * 1024 * 1024, **_SCRYPT)


class TokenStore:
    """The token file of one deployment; re-read when it changes, so added or revoked tokens apply at once."""

    def __init__(self, home: Path):
        self.path = tokens_path(home)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._entries: dict[str, dict] = {}
        self._verified: dict[bytes, Grant] = {}
        self._memo_key = secrets.token_bytes(32)  # per process: the memo is useless outside it

    # ---- file --------------------------------------------------------------------------------------------

    def _load(self) -> dict[str, dict]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._entries, self._mtime, self._verified = {}, None, {}
            return self._entries
        if mtime != self._mtime:
            self._entries = json.loads(self.path.read_text()).get("tokens", {})
            self._mtime, self._verified = mtime, {}  # a revoked token must stop working
        return self._entries

    def _save(self, entries: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
        with os.fdopen(fd, "w") as f:
            os.fchmod(fd, 0o600)
            json.dump({"tokens": entries}, f, indent=1)
        os.replace(tmp, self.path)

    # ---- commands ----------------------------------------------------------------------------------------

    def add(self, client: str | None = None, operator: bool = False, note: str = "") -> tuple[str, Grant]:
        """A new token for one client (or the operator role); returns the token, the only time it exists."""
        if operator == (client is not None):
            raise TokenError("give exactly one of --client NAME or --operator")
        role = OPERATOR if operator else CLIENT
        name = None if operator else validate_client_name(client or "")
        token_id, secret = secrets.token_hex(4), secrets.token_urlsafe(24)
        salt = secrets.token_bytes(16)
        with self._lock:
            entries = dict(self._load())
            while token_id in entries:
                token_id = secrets.token_hex(4)
            entries[token_id] = {"role": role, "client": name, "salt": salt.hex(), "scrypt": _hash(secret, salt).hex(),
                                 "created_at": int(time.time()), "note": note}
            self._save(entries)
        return f"dwr_{token_id}_{secret}", Grant(token_id, role, name)

    def revoke(self, token_id: str) -> None:
        with self._lock:
            entries = dict(self._load())
            if token_id not in entries:
                raise TokenError(f"no token with id {token_id!r} (see `dw reports tokens list`)")
            del entries[token_id]
            self._save(entries)

    def list(self) -> list[tuple[str, Grant, int, str]]:
        with self._lock:
            return [(i, Grant(i, e["role"], e.get("client")), int(e.get("created_at", 0)), e.get("note", ""))
                    for i, e in sorted(self._load().items())]

    # ---- checking ----------------------------------------------------------------------------------------

    def verify(self, token: str | None) -> Grant | None:
        """The grant of a valid token, else None (malformed, unknown, revoked or wrong secret alike)."""
        if not token or not token.startswith("dwr_") or token.count("_") < 2:
            return None
        token_id, secret = token[4:].split("_", 1)
        memo = hmac.new(self._memo_key, token.encode(), "sha256").digest()
        with self._lock:
            entries = self._load()
            if memo in self._verified:
                return self._verified[memo]
            entry = entries.get(token_id)
        if entry is None:
            return None
        if not hmac.compare_digest(_hash(secret, bytes.fromhex(entry["salt"])), bytes.fromhex(entry["scrypt"])):
            return None
        grant = Grant(token_id, entry["role"], entry.get("client"))
        with self._lock:
            self._verified[memo] = grant
        return grant
