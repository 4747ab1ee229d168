"""``make token`` / ``make revoke`` / ``make tokens``: API tokens in the store the running setup uses.

    python -m serving token --name laptop --scope write     # prints the token once
    python -m serving revoke --name laptop                   # by name or id; refused at once on every replica
    python -m serving tokens                                 # every token, revoked ones too (never the secret)

The store is the cluster's PostgreSQL when ``var/`` holds one (``make serve-cluster``), else ``DATABASE_URL``'s,
else the SQLite store in ``var/`` (``make serve``).
"""
from __future__ import annotations

from photo_store import StoreUnavailable
from serving.cluster import Cluster, is_cluster
from serving.stack import Stack, open_stack_store


def open_setup_store(stack: Stack):
    """The store of the cluster in ``stack.var_dir`` (its replicas'), or else of ``stack`` itself."""
    return open_stack_store(Cluster.load(stack.var_dir).stacks[0] if is_cluster(stack.var_dir) else stack)


def run(command: str, stack: Stack, *, name: str | None, scope: str | None) -> tuple[int, str]:
    """(exit status, what to print) for token, revoke or tokens."""
    try:
        store = open_setup_store(stack)
    except (StoreUnavailable, ValueError) as exc:
        return 1, f"{command} failed: {exc}"
    try:
        if command == "token":
            if not name or not scope:
                return 2, "usage: make token NAME=who-holds-it SCOPE=read|write (write includes read)"
            try:
                made = store.create_token(name, scope)
            except ValueError as exc:
                return 2, f"token failed: {exc}"
            return 0, (f"{made['token']}\n  id {made['id']}, {made['scope']} scope, for {made['name']}: this is its "
                       "only copy (the store keeps its SHA-256)\n  send it as 'Authorization: Bearer TOKEN', or sign "
                       f"in with it on the annotation page; revoke with make revoke NAME={made['id']}")
        if command == "revoke":
            if not name:
                return 2, "usage: make revoke NAME=name-or-id (make tokens lists them)"
            gone = store.revoke_tokens(name)
            if not gone:
                return 1, f"revoke: no live token has the name or id {name!r} (make tokens lists them)"
            return 0, "\n".join(f"revoked {t['id']} ({t['name']}, {t['scope']})" for t in gone)
        rows = store.tokens()
        return 0, "\n".join(f"{t['id']}  {t['scope']:5s}  {t['created_at']}  "
                            f"{'revoked ' + t['revoked_at'] if t['revoked_at'] else 'live':28s}  {t['name']}"
                            for t in rows) or "no tokens yet (make token NAME=... SCOPE=read|write)"
    except StoreUnavailable as exc:
        return 1, f"{command} failed: {exc}"
    finally:
        store.close()


