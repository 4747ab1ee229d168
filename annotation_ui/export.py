"""The annotation export: the labelled photos of a store as a COCO-format file that the training tool reads as is.

    python -m annotation_ui.export --data-dir var --out var/export.json      # or GET /annotate/export.json
    python -m training --data var --ann var/export.json --output checkpoints/mine

``file_name`` entries are relative to the photo folder (the data directory unless ``--photo-dir``;
``images/3f/....jpg``). Only photos a person saved are
exported; on each, the labels that person did not review are listed in ``unknown_category_ids`` (masked in
training, never taught as negatives).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from annotation_ui.labelling import reviewed
from annotation_ui.vocabulary import served_model
from photo_store import StoreUnavailable, open_store
from tagger import REPO
from tagger.labels import label_names, load_labels
from tagger.layout import DataDir
from tagger.meta import save_json, utc_now


def build_export(records: Iterable[dict], vocabulary: list[dict], *, source: str = "") -> dict:
    """A COCO dict from store records (``store.labelled_records()``; unlabelled ones are skipped) and the label
    vocabulary (``id``, ``name``; the labels people added, ``added``, and the retired ones too: what people saved
    for them is exported all the same).

    A label a photo's save did not show (not reviewed, or added after it was saved) is in its
    ``unknown_category_ids``: unknown, never a negative. Categories carry their synonyms and evidence fields, so
    the file also tells the training tool what a label is called elsewhere."""
    images, annotations = [], []
    for image, category_ids in _entries(records, vocabulary):
        images.append(image)
        annotations.extend(_annotation(len(annotations) + 1, image["id"], c) for c in category_ids)
    return {**_head(vocabulary, source), "images": images, "annotations": annotations}


def stream_export(records: Iterable[dict], vocabulary: list[dict], *, source: str = "") -> Iterator[str]:
    """``build_export``'s file as pieces of JSON text, written as the records are read: the images go out one by
    one while their annotations wait in a temporary file (memory stays flat however many photos are labelled)."""
    head = json.dumps(_head(vocabulary, source))
    yield head[:-1] + ', "images": ['
    with tempfile.TemporaryFile("w+", encoding="utf-8") as pending:
        n = 0
        for image, category_ids in _entries(records, vocabulary):
            yield ("" if image["id"] == 1 else ", ") + json.dumps(image)
            for c in category_ids:
                n += 1
                pending.write(("" if n == 1 else ", ") + json.dumps(_annotation(n, image["id"], c)))
        yield '], "annotations": ['
        pending.seek(0)
        while piece := pending.read(1 << 16):
            yield piece
    yield "]}"


def _head(vocabulary: list[dict], source: str) -> dict:
    return {"info": {"description": "photo tagger annotation export (image-level labels; unreviewed labels in "
                                    "unknown_category_ids)", "vocabulary": source,
                     "date_created": utc_now()},
            "licenses": [],
            "categories": [{"id": lab["id"], "name": lab["name"], "isthing": lab.get("isthing", 0),
                            **{k: lab[k] for k in ("supercategory", "synonyms", "kind", "detector_class", "imagenet",
                                                   "retired_at") if lab.get(k)}}
                           for lab in vocabulary]}


def _entries(records: Iterable[dict], vocabulary: list[dict]) -> Iterator[tuple[dict, list[int]]]:
    """``(image entry, category ids a person set)`` per labelled record, image ids from 1."""
    names = label_names(vocabulary)
    by_name = {lab["name"]: lab for lab in vocabulary}
    image_id = 0
    for record in records:
        if record.get("labelled_at") is None:
            continue
        values = reviewed(record, names)
        image_id += 1
        yield ({"id": image_id, "file_name": record["file"], "width": record["width"], "height": record["height"],
                "id_name": record["id_name"], "sha256": record["sha256"], "labelled_at": record["labelled_at"],
                "unknown_category_ids": [by_name[n]["id"] for n in names if n not in values]},
               [by_name[name]["id"] for name in names if values.get(name)])


def _annotation(annotation_id: int, image_id: int, category_id: int) -> dict:
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0, "area": 0,
            "bbox": []}


def export_store(data_dir: str | Path, vocabulary: list[dict], *, source: str = "", database_url: str = "",
                 photo_dir: str | Path | None = None) -> dict:
    """The export of the store in ``data_dir`` (or the one ``database_url`` names, its files in ``photo_dir``)."""
    store = open_store(data_dir, database_url, photo_dir=photo_dir)
    try:
        return build_export(store.labelled_records(), vocabulary, source=source)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annotation_ui.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="var", help="the gateway's data directory (default: var)")
    p.add_argument("--out", required=True, help="the COCO JSON file to write")
    p.add_argument("--labels", default=None, help="label vocabulary JSON (default: the labels of the version "
                   "recorded in DATA_DIR/run/torchserve/deployed.json, else tagger/labels.json)")
    p.add_argument("--model-store", default=None, help="where archives live (default: model_store/)")
    p.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""),
                   help="the store's database (default: $DATABASE_URL; empty: SQLite in --data-dir)")
    p.add_argument("--photo-dir", default=None, help="where the store's photo files are (default: --data-dir)")
    args = p.parse_args(argv)

    if args.labels:
        vocabulary, source = load_labels(args.labels), args.labels
    else:
        state = DataDir(args.data_dir).deployed
        version = json.loads(state.read_text()).get("default") if state.is_file() else "1.0"
        model = served_model(Path(args.model_store or REPO / "model_store"), version)
        vocabulary, source = model["labels"], model["source"]
    if not args.database_url and not (Path(args.data_dir) / "photos.db").is_file():
        print(f"error: no photo store in {args.data_dir} (photos.db missing); pass --data-dir", file=sys.stderr)
        return 2
    try:
        export = export_store(args.data_dir, vocabulary, source=source, database_url=args.database_url,
                              photo_dir=args.photo_dir)
    except (StoreUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_json(args.out, export)
    print(f"wrote {args.out}: {len(export['images'])} labelled photos, {len(export['annotations'])} labels; "
          f"train with: python -m training --data {args.photo_dir or args.data_dir} --ann {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
