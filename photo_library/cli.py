"""The photo library's command line: ``python -m photo_library tag|import|export DIR`` (see ``--help``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from photo_library.export import export_rows, render
from photo_library.gateway_client import GatewayDown
from photo_library.keywords import import_keywords, load_synonyms
from photo_library.tagging import tag_folder
from photo_library.xmp import XmpError, unsafe
from tagger.labels import load_labels
from tagger.meta import atomic_write, save_json
from tagger.net import GATEWAY_PORT, local_url
from tagger.tags import POLICIES

DEFAULT_GATEWAY = local_url(GATEWAY_PORT)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m photo_library", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tag", help="tag every photo under DIR into XMP sidecars beside them")
    t.add_argument("dir", type=Path, help="the photo folder (walked recursively; originals are never modified)")
    t.add_argument("--gateway", default=DEFAULT_GATEWAY, help=f"the gateway's URL (default: {DEFAULT_GATEWAY})")
    t.add_argument("--sidecar-name", choices=("ext", "stem"), default="ext",
                   help="ext: NAME.EXT.xmp (darktable, digiKam); stem: NAME.xmp (Lightroom) (default: ext)")
    t.add_argument("--parent", default="Tagger",
                   help="parent keyword of the tagger's hierarchical keywords, Tagger|sea and Tagger/sea "
                        "(default: Tagger)")
    t.add_argument("-j", "--concurrency", type=int, default=4, help="photos in flight (default: 4)")
    t.add_argument("--policy", choices=POLICIES, default=None,
                   help="tag policy: precise (tags right at least 7 times in 10), balanced (F1-best) or complete "
                        "(8 in 10 of a label's photos tagged) (default: the gateway's, precise unless set)")
    t.add_argument("--dry-run", action="store_true", help="say what would be tagged, upload and write nothing")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (default: one on stderr)")
    i = sub.add_parser("import", help="the keywords people typed under DIR as a COCO file for training")
    i.add_argument("dir", type=Path, help="the photo folder (photos and their sidecars)")
    i.add_argument("--output", required=True, type=Path, help="the COCO JSON file to write")
    i.add_argument("--map", default=None, help='JSON synonyms, keyword -> label name: {"ocean": "sea"} '
                                               "(default: none)")
    i.add_argument("--labels", default=None, help="label vocabulary JSON (default: tagger/labels.json)")
    i.add_argument("--parent", default="Tagger", help="the tagger's parent keyword, never imported (default: Tagger)")
    i.add_argument("--new-labels", type=int, nargs="?", const=5, default=None, metavar="N",
                   help="every keyword used on at least N photos that names no label becomes a label; the labels "
                        "file to train with is written beside --output (NAME.labels.json) (default: off; N: 5)")
    e = sub.add_parser("export", help="every photo's tags and scores as CSV or JSON")
    e.add_argument("dir", type=Path, help="the photo folder")
    e.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default: csv)")
    e.add_argument("--output", type=Path, default=None, help="file to write (default: standard output)")
    e.add_argument("--gateway", default=DEFAULT_GATEWAY, help=f"the gateway's URL (default: {DEFAULT_GATEWAY})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a folder", file=sys.stderr)
        return 2
    root = args.dir.resolve()
    if unsafe(str(root)) or unsafe(getattr(args, "parent", "")):
        print("error: the folder or --parent holds a line break, which ExifTool's protocol cannot take",
              file=sys.stderr)
        return 2
    try:
        if args.command == "tag":
            return _tag(args, root)
        if args.command == "import":
            return _import(args, root)
        return _export(args, root)
    except (GatewayDown, XmpError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped: run the same command again to go on where it stopped", file=sys.stderr)
        return 130


def _tag(args, root: Path) -> int:
    s = tag_folder(root, gateway=args.gateway, naming=args.sidecar_name, parent=args.parent,
                   concurrency=args.concurrency, dry_run=args.dry_run, progress=not args.no_progress,
                   policy=args.policy)
    for path in s.planned:
        print(f"would tag: {path}")
    for path, reason in s.failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    print(s.line())
    return 1 if s.failed else 0


def _import(args, root: Path) -> int:
    labels = load_labels(args.labels)
    try:
        synonyms = load_synonyms(args.map, labels)
    except (ValueError, OSError) as exc:
        print(f"error: --map {exc}", file=sys.stderr)
        return 2
    if args.new_labels is not None and args.new_labels < 1:
        print("error: --new-labels N needs N >= 1 photos", file=sys.stderr)
        return 2
    coco, report = import_keywords(root, labels, synonyms=synonyms, parent=args.parent, new_labels=args.new_labels)
    save_json(args.output, coco)
    for f in report["failed"]:
        print(f"failed: {f['path']}: {f['reason']}", file=sys.stderr)
    top = ", ".join(f"{k} ({n})" for k, n in list(report["unmatched_keywords"].items())[:10])
    print(f"wrote {args.output}: {report['photos_with_labels']} photos with {report['labels']} labels"
          + (f"; keywords naming no label: {top} (map them with --map)" if top and args.new_labels is None else ""))
    labels_arg = ""
    if args.new_labels is not None:
        labels_file = args.output.with_name(args.output.stem + ".labels.json")
        save_json(labels_file, {"labels": report["vocabulary"]})
        labels_arg = f" --labels {labels_file}"
        say = {"detector": "the detector knows it: tagged with no example",
               "imagenet": "ImageNet classes speak for it", "none": "learns from its photos alone"}
        print(f"wrote {labels_file}: {len(labels)} labels and {len(report['new_labels'])} new ones from keywords "
              f"on at least {args.new_labels} photos:")
        for lab in report["new_labels"]:
            print(f"  {lab['name']} ({lab['photos']} photos): {say[lab['evidence']]}")
        for word, why in report["refused_keywords"]:
            print(f"  not a label: {word!r}: {why}", file=sys.stderr)
    print(f"train with: python -m training --recipe prior --data {root} --ann {args.output}{labels_arg}")
    return 1 if report["failed"] else 0


def _export(args, root: Path) -> int:
    rows, failed = export_rows(root, gateway=args.gateway)
    text = render(rows, args.format)
    if args.output:
        atomic_write(args.output, lambda f: f.write(text.encode()))
    else:
        sys.stdout.write(text)
    for path, reason in failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0
