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
from pathlib import Path

from annotation_ui.labelling import reviewed
from annotation_ui.vocabulary import served_model
from photo_store import StoreUnavailable, open_store
from tagger import REPO
from tagger.labels import label_names, load_labels
from tagger.layout import DataDir
from tagger.meta import save_json, utc_now


def build_export(records: list[dict], vocabulary: list[dict], *, source: str = "") -> dict:
    """A COCO dict from store records (``PhotoStore.list``) and the label vocabulary (``id``, ``name``; the labels
    people added, ``added``, and the retired ones too: what people saved for them is exported all the same).

    A label a photo's save did not show (not reviewed, or added after it was saved) is in its
    ``unknown_category_ids``: unknown, never a negative. Categories carry their synonyms and evidence fields, so
    the file also tells the training tool what a label is called elsewhere."""
    names = label_names(vocabulary)
    by_name = {lab["name"]: lab for lab in vocabulary}
    images, annotations = [], []
    for record in records:
        if record.get("labelled_at") is None:
            continue
        values = reviewed(record, names)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": record["file"], "width": record["width"],
                       "height": record["height"], "id_name": record["id_name"], "sha256": record["sha256"],
                       "labelled_at": record["labelled_at"],
                       "unknown_category_ids": [by_name[n]["id"] for n in names if n not in values]})
        for name in names:
            if values.get(name):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": by_name[name]["id"], "iscrowd": 0, "area": 0, "bbox": []})
    return {"info": {"description": "photo tagger annotation export (image-level labels; unreviewed labels in "
                                    "unknown_category_ids)", "vocabulary": source,
                     "date_created": utc_now()},
            "licenses": [],
            "categories": [{"id": lab["id"], "name": lab["name"], "isthing": lab.get("isthing", 0),
                            **{k: lab[k] for k in ("supercategory", "synonyms", "kind", "detector_class", "imagenet",
                                                   "retired_at") if lab.get(k)}}
                           for lab in vocabulary],
            "images": images, "annotations": annotations}


def export_store(data_dir: str | Path, vocabulary: list[dict], *, source: str = "", database_url: str = "",
                 photo_dir: str | Path | None = None) -> dict:
    """The export of the store in ``data_dir`` (or the one ``database_url`` names, its files in ``photo_dir``)."""
    store = open_store(data_dir, database_url, photo_dir=photo_dir)
    try:
        return build_export(store.list(limit=10_000_000), vocabulary, source=source)
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
