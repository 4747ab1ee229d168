"""``make backup``, ``make restore`` and ``make empty-trash`` on the store the running setup uses.

    python -m serving backup DIR            # while it serves: a consistent copy (photo_store/backup.py)
    python -m serving restore DIR           # services stopped, into an empty data folder (DATABASE_URL: an empty
                                            # PostgreSQL database for a PostgreSQL backup)
    python -m serving empty-trash [--days N]  # erase what was deleted (N: only what is older than N days)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from photo_store import StoreUnavailable
from photo_store.backup import BackupError, backup, restore
from serving.stack import Stack, gateway_pid
from serving.tokens import open_setup_store
from tagger.meta import utc_now


def backup_command(stack: Stack, folder: str | None) -> int:
    if not folder:
        print("usage: make backup BACKUP=DIR (a new or empty folder)", file=sys.stderr)
        return 2
    try:
        store = open_setup_store(stack)
        manifest = backup(store, Path(folder))
    except (StoreUnavailable, ValueError, BackupError, RuntimeError, OSError) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    counts = manifest["counts"]
    print(f"backed up {counts['photos']} photo(s), {counts['history']} earlier version(s), {counts['trash']} in the "
          f"trash, {counts['tokens']} token(s) and {len(manifest['files'])} file(s) to {folder}")
    return 0


def restore_command(stack: Stack, folder: str | None) -> int:
    if not folder:
        print("usage: make restore BACKUP=DIR (services stopped; into an empty data folder)", file=sys.stderr)
        return 2
    if gateway_pid(stack) is not None:
        print(f"restore refused: the gateway serves from {stack.var_dir}; make stop first", file=sys.stderr)
        return 1
    try:
        done = restore(Path(folder), stack.var_dir, database_url=os.environ.get("DATABASE_URL", ""))
    except (StoreUnavailable, ValueError, BackupError, RuntimeError, OSError) as exc:
        print(f"restore failed: {exc}", file=sys.stderr)
        return 1
    print(f"restored {done['counts']['photos']} photo(s) and {done['files']} file(s) into {stack.var_dir}; rows "
          "and SHA-256 of every file verified")
    return 0


def empty_trash_command(stack: Stack, days: float | None) -> int:
    try:
        store = open_setup_store(stack)
        erased = store.empty_trash(before=None if days is None else utc_now(micro=True, hours=-24 * days))
    except (StoreUnavailable, ValueError) as exc:
        print(f"empty-trash failed: {exc}", file=sys.stderr)
        return 1
    print(f"erased {erased} deleted photo(s) from the trash")
    return 0
