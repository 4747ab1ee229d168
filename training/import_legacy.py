"""Convert the original tool's ``newdata/`` folder into a COCO-format file that training and the page read.

    python -m training.import_legacy newdata/ --out newdata.json
    python -m training --data newdata --ann newdata.json          # then train on it (with other data too)

Label pickles are read by a restricted unpickler: a pickle that asks for anything but plain values is refused
with a message naming the file, and nothing in it runs.
"""
from __future__ import annotations

import argparse
import sys

from tagger.labels import load_labels
from tagger.meta import save_json
from training.legacy import LegacyError, import_newdata


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("newdata", help="the original tool's newdata/ folder (images/, labels/, select.pkl)")
    p.add_argument("--out", required=True, help="COCO-format JSON file to write")
    p.add_argument("--labels", default=None, help="label vocabulary JSON (default: tagger/labels.json)")
    return p


def main(args: argparse.Namespace) -> dict:
    coco, report = import_newdata(args.newdata, load_labels(args.labels))
    save_json(args.out, coco)
    print(f"wrote {args.out}: {report['images']} images, {report['annotations']} labels")
    if report["unlabelled"]:
        print(f"left out {len(report['unlabelled'])} images without a label pickle: "
              f"{', '.join(report['unlabelled'][:10])}{' ...' if len(report['unlabelled']) > 10 else ''}")
    if report["labels_outside_vocabulary"]:
        print(f"labels not in the vocabulary (kept as categories, ignored by training): "
              f"{', '.join(report['labels_outside_vocabulary'])}")
    print(f"train on it: python -m training --data {args.newdata} --ann {args.out}")
    return report


if __name__ == "__main__":
    try:
        main(get_args_parser().parse_args())
    except LegacyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
