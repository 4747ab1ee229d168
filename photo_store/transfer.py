"""Copy a store into another: the SQLite store of ``make serve`` into PostgreSQL (``make migrate-store``).

    python -m photo_store.transfer --data-dir var --to postgresql://tagger@127.0.0.1:5433/tagger
    PGPASSFILE=var/run/postgres/pgpass make migrate-store TO=postgresql://tagger@127.0.0.1:5433/tagger

Photos, their history (replaced photos with their labels), labels, cached predictions and API tokens (their
hashes, revoked ones too) are copied in batches;
a row the target has already is left alone, so a run that was interrupted is simply run again and goes on where
it stopped. Photo files stay where they are (the target's photo folder is the source's unless ``--photo-dir``,
then they are copied atomically). At the end every table's count is compared and every photo file's SHA-256 is
checked against its record; any difference is printed and the exit status is 1. Stop the gateway first: uploads
that arrive during the copy may be missed (run it again after they stopped).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from photo_store import StoreUnavailable, open_store
from tagger.meta import atomic_write

# Each table's rows in a stable order, and what says a row is already there (history has no key of its own).
KEYS = {"photos": ("id_name",), "history": ("id_name", "replaced_at", "sha256"),
        "predictions": ("sha256", "model_version"), "tokens": ("id",)}  # sign-in sessions are not copied


def iter_rows(store, table: str, *, batch: int = 500) -> Iterator[dict]:
    """Every row of ``table`` as stored (JSON fields as text), in key order, ``batch`` at a time."""
    keys = KEYS[table]
    after = None
    while True:
        with store._connect() as db:
            if after is None:
                rows = store._rows(db, f"SELECT * FROM {table} ORDER BY {', '.join(keys)} LIMIT ?", (batch,))
            else:
                rows = store._rows(db, f"SELECT * FROM {table} WHERE ({', '.join(keys)}) >"
                                       f" ({', '.join('?' * len(keys))}) ORDER BY {', '.join(keys)} LIMIT ?",
                                   (*after, batch))
        rows = [dict(r) for r in rows]
        yield from rows
        if len(rows) < batch:
            return
        after = tuple(rows[-1][k] for k in keys)


def insert_missing(store, table: str, rows: list[dict]) -> int:
    """Insert the rows ``store`` does not have yet (by ``KEYS``), in one transaction; returns how many."""
    if not rows:
        return 0
    keys, columns = KEYS[table], list(rows[0])
    added = 0
    with store._connect() as db, store._write(db, f"transfer:{table}"):
        for row in rows:
            if store._one(db, f"SELECT 1 FROM {table} WHERE {' AND '.join(f'{k} = ?' for k in keys)}",
                          tuple(row[k] for k in keys)) is None:
                added += store._run(db, f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
                                        f" ({', '.join('?' * len(columns))})", tuple(row[c] for c in columns))
    return added


def transfer(src, dst, *, batch: int = 500, say: Callable[[str], None] = print) -> dict:
    """Copy every table of ``src`` into ``dst`` (files too when their photo folders differ); returns the number
    of rows added per table."""
    added = {}
    for table in KEYS:
        added[table], pending = 0, []
        for row in iter_rows(src, table, batch=batch):
            if table in ("photos", "history") and src.root.resolve() != dst.root.resolve():
                copy_file(src.root / row["file"], dst.root / row["file"])
            pending.append(row)
            if len(pending) >= batch:
                added[table] += insert_missing(dst, table, pending)
                pending = []
                say(f"{table}: {added[table]} rows added so far")
        added[table] += insert_missing(dst, table, pending)
        say(f"{table}: {added[table]} rows added")
    return added


def copy_file(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return  # copied by an earlier run (written atomically, so whole)
    with open(src, "rb") as f:
        atomic_write(dst, lambda out: shutil.copyfileobj(f, out))


def verify(src, dst) -> list[str]:
    """What differs between the two stores: row counts per table, and any photo file missing in ``dst`` or whose
    SHA-256 is not its record's."""
    problems = []
    for table in KEYS:
        counts = []
        for store in (src, dst):
            with store._connect() as db:
                counts.append(int(store._one(db, f"SELECT COUNT(*) AS n FROM {table}")["n"]))
        if counts[0] != counts[1]:
            problems.append(f"{table}: {counts[0]} rows in the source, {counts[1]} in the target")
    for table in ("photos", "history"):
        for row in iter_rows(dst, table):
            path = dst.root / row["file"]
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                problems.append(f"{table} {row['id_name']!r}: {row['file']} cannot be read ({exc.strerror})")
                continue
            if digest != row["sha256"]:
                problems.append(f"{table} {row['id_name']!r}: {row['file']} does not hash to its record's sha256")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m photo_store.transfer", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="var", help="the source: the SQLite store's data folder (default var)")
    p.add_argument("--to", default=os.environ.get("DATABASE_URL", ""),
                   help="the target's postgresql:// URL (default: $DATABASE_URL); its password from PGPASSFILE")
    p.add_argument("--photo-dir", default=None, help="the target's photo folder (default: the source's)")
    p.add_argument("--batch", type=int, default=500)
    args = p.parse_args(argv)
    if not args.to.startswith(("postgresql://", "postgres://")):
        p.error("--to (or DATABASE_URL) must be the target's postgresql://USER@HOST:PORT/DB")
    if not (Path(args.data_dir) / "photos.db").is_file():
        print(f"error: no SQLite store in {args.data_dir} (photos.db missing); pass --data-dir", file=sys.stderr)
        return 2
    try:
        src = open_store(args.data_dir)
        dst = open_store(args.data_dir, args.to, photo_dir=args.photo_dir or src.root)
        added = transfer(src, dst, batch=args.batch)
        problems = verify(src, dst)
    except (StoreUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in problems:
        print(f"differs: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"copied and verified: {added}; every row is there and every photo file matches its sha256. "
          f"Start the gateway with DATABASE_URL={args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
