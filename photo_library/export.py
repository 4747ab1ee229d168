"""``export``: every photo's tags and scores as CSV or JSON, for spreadsheets (from the gateway, which stores the
photos it has not seen yet).

    rows = export_rows(Path("~/Pictures").expanduser(), gateway="http://127.0.0.1:7777")
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from photo_library.files import id_name, photos_in
from photo_library.gateway_client import GatewayClient, PhotoRefused


def export_rows(root: Path, *, gateway: str) -> tuple[list[dict], list[tuple[Path, str]]]:
    """``(rows, failed)``: one row per photo ``{"path", "id_name", "model_version", "tags", "scores"}``."""
    client = GatewayClient(gateway)
    client.served_version()
    rows, failed = [], []
    for photo in photos_in(root):
        name = id_name(root, photo)
        try:
            try:
                info = client.info(name)
            except PhotoRefused:  # not in the store yet (404): store it
                info = client.tag(photo.read_bytes(), name, photo.name)
        except (PhotoRefused, OSError) as exc:
            failed.append((photo, str(exc)))
            continue
        rows.append({"path": photo.relative_to(root).as_posix(), "id_name": name,
                     "model_version": info.get("model_version"), "tags": info["predict_tags"],
                     "scores": info.get("scores", {})})
    return rows, failed


def render(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    labels = list(rows[0]["scores"]) if rows else []
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["path", "id_name", "model_version", "tags", *labels])
    for r in rows:
        w.writerow([r["path"], r["id_name"], r["model_version"], ";".join(r["tags"]),
                    *[r["scores"].get(lab, "") for lab in labels]])
    return out.getvalue()
