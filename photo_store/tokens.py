"""API tokens and the annotation page's sign-in sessions, kept in the store beside the photos.

    store.create_token("laptop", "write")["token"]   # tg_3f2a9c1e_...: shown once; only its SHA-256 is kept
    store.token_grant("tg_3f2a9c1e_...")              # {"id": "3f2a9c1e", "name": "laptop", "scope": "write"}
    store.revoke_tokens("laptop")                     # by name or id; its sessions end with it

Every replica reads the same rows on every request, so a revoked token is refused at once everywhere. A token
is 32 random bytes (``secrets``), so a plain SHA-256 is a sufficient, constant-cost way to keep it unreadable
(as GitHub's and Kubernetes' service tokens do); a session cookie is kept the same way.
"""
from __future__ import annotations

import hashlib
import secrets

from tagger.meta import utc_now

SCOPES = ("read", "write")  # write includes read
PREFIX = "tg_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore:
    """Mixed into ``SqlStore``: the queries run on either backend."""

    def create_token(self, name: str, scope: str) -> dict:
        """A new token for ``name`` with ``scope`` ("read" or "write"); the returned ``token`` is its only copy."""
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r} is not one of {', '.join(SCOPES)} (write includes read)")
        name = name.strip()
        if not name:
            raise ValueError("a token needs a name that says who holds it (NAME=laptop)")
        token_id = secrets.token_hex(4)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        now = utc_now()
        with self._connect() as db:
            self._run(db, "INSERT INTO tokens (id, name, scope, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                      (token_id, name, scope, digest(token), now))
        return {"id": token_id, "name": name, "scope": scope, "created_at": now, "token": token}

    def tokens(self) -> list[dict]:
        """Every token made, revoked ones included (never their hash)."""
        with self._connect() as db:
            return [dict(r) for r in self._rows(
                db, "SELECT id, name, scope, created_at, revoked_at FROM tokens ORDER BY created_at, id")]

    def revoke_tokens(self, ref: str) -> list[dict]:
        """Revoke the live tokens whose id or name is ``ref`` and end their sessions; returns what was revoked."""
        now = utc_now()
        with self._connect() as db:
            with self._write(db, "tokens"):
                hits = [dict(r) for r in self._rows(db, "SELECT id, name, scope FROM tokens WHERE (id = ? OR name = ?)"
                                                        " AND revoked_at IS NULL", (ref, ref))]
                for t in hits:
                    self._run(db, "UPDATE tokens SET revoked_at = ? WHERE id = ?", (now, t["id"]))
                    self._run(db, "DELETE FROM sessions WHERE token_id = ?", (t["id"],))
        return hits

    def token_grant(self, token: str) -> dict | None:
        """``{"id", "name", "scope"}`` of a live token, None for an unknown or revoked one."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        with self._connect() as db:
            row = self._one(db, "SELECT id, name, scope FROM tokens WHERE hash = ? AND revoked_at IS NULL",
                            (digest(token),))
        return dict(row) if row else None

    def start_session(self, token_id: str, *, hours: float) -> str:
        """A new session of a token for ``hours``; returns the cookie's value (its only copy)."""
        value = secrets.token_urlsafe(32)
        now = utc_now(micro=True)
        with self._connect() as db:
            self._run(db, "DELETE FROM sessions WHERE expires_at < ?", (now,))  # the expired ones, in passing
            self._run(db, "INSERT INTO sessions (hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                      (digest(value), token_id, now, utc_now(micro=True, hours=hours)))
        return value

    def session_grant(self, value: str) -> dict | None:
        """What a live session's token grants (as ``token_grant``), None when expired, ended or revoked."""
        if not value or len(value) > 200:
            return None
        with self._connect() as db:
            row = self._one(db, "SELECT t.id, t.name, t.scope FROM sessions s JOIN tokens t ON t.id = s.token_id"
                                " WHERE s.hash = ? AND s.expires_at > ? AND t.revoked_at IS NULL",
                            (digest(value), utc_now(micro=True)))
        return dict(row) if row else None

    def end_session(self, value: str) -> None:
        with self._connect() as db:
            self._run(db, "DELETE FROM sessions WHERE hash = ?", (digest(value),))
