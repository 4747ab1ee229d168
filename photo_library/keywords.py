"""``import``: the keywords people typed (sidecars, and XMP ``dc:subject`` / IPTC ``Keywords`` inside the photos)
as a COCO-format annotation file the training tool reads.

    coco, report = import_keywords(Path("~/Pictures").expanduser(), labels, synonyms={"ocean": "sea"})
    # python -m training --data ~/Pictures --ann keywords.json

A keyword that names a label (case-insensitive, or through ``synonyms``) is a positive; a photo's other labels
are unknown (``unknown_category_ids``), never negatives. The tagger's own entries are never imported: the
``dc:subject`` keywords its sidecar record says it added, and any keyword under its parent name (``Tagger|sea``,
``Tagger/sea``), so the model never learns from its own guesses.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from photo_library.files import SIDECAR_NAMES, photos_in, sidecar_path
from photo_library.xmp import (HIERARCHICAL, MODEL_VERSION, SUBJECT, TAGGER_SUBJECTS, TAGS_LIST, UNSAFE_NAME,
                               ExifTools, XmpError, read_tags, unsafe)

IPTC_KEYWORDS = "IPTC:Keywords"
PHOTO_TAGS = (SUBJECT, IPTC_KEYWORDS, HIERARCHICAL, TAGS_LIST)


def load_synonyms(path: str | Path | None, labels: list[dict]) -> dict[str, str]:
    """``{keyword (lower case): label name}`` from a JSON object file such as ``{"ocean": "sea"}``.

    Raises:
        ValueError: the file is not such an object, or maps to a name that is not a label.
    """
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: expected a JSON object of keyword -> label name, like {{\"ocean\": \"sea\"}}")
    names = {lab["name"].lower(): lab["name"] for lab in labels}
    bad = sorted(v for v in data.values() if v.lower() not in names)
    if bad:
        raise ValueError(f"{path}: {', '.join(map(repr, bad[:5]))} name no label; labels are "
                         + ", ".join(lab["name"] for lab in labels))
    return {k.lower(): names[v.lower()] for k, v in data.items()}


def user_keywords(fields: dict, parent: str) -> list[str]:
    """The keywords of one file's fields that a person gave. Where the tagger's record is there, the keywords it
    says it added are the tagger's; without it (another program rewrote the file), every keyword that also
    stands under the tagger's parent name (``Tagger|sea``, ``Tagger/sea``) counts as the tagger's."""
    if fields.get(MODEL_VERSION):
        ours = set(fields.get(TAGGER_SUBJECTS) or [])
    else:
        ours = {v[len(parent) + 1:] for v in fields.get(HIERARCHICAL) or [] if v.startswith(parent + "|")}
        ours |= {v[len(parent) + 1:] for v in fields.get(TAGS_LIST) or [] if v.startswith(parent + "/")}
    words = (fields.get(SUBJECT) or []) + (fields.get(IPTC_KEYWORDS) or [])
    return [w for w in words if w not in ours and w != parent]


def import_keywords(root: Path, labels: list[dict], *, synonyms: dict[str, str] | None = None,
                    parent: str = "Tagger") -> tuple[dict, dict]:
    """``(coco, report)`` for the photos under ``root`` that have at least one keyword naming a label; photos that
    do not decode are reported in ``report["failed"]``."""
    from training.datasets import check_image

    by_word = {lab["name"].lower(): lab for lab in labels}
    by_name = {lab["name"]: lab for lab in labels}
    for word, name in (synonyms or {}).items():
        by_word[word] = by_name[name]
    images, annotations, unmatched, failed = [], [], {}, []
    with ExifTools() as tools, tools.use() as tool:
        for photo in photos_in(root):
            if unsafe(str(photo)):
                failed.append({"path": str(photo), "reason": UNSAFE_NAME})
                continue
            reason = check_image(photo)  # what the training tool would skip
            if reason:
                failed.append({"path": str(photo), "reason": reason})
                continue
            try:
                words = user_keywords(read_tags(tool, photo, PHOTO_TAGS), parent)
                for naming in SIDECAR_NAMES:
                    side = sidecar_path(photo, naming)
                    if side.exists():
                        words += user_keywords(read_tags(tool, side,
                                                         PHOTO_TAGS + (TAGGER_SUBJECTS, MODEL_VERSION)), parent)
                with Image.open(photo) as im:
                    width, height = im.size
            except (XmpError, OSError, ValueError) as exc:
                failed.append({"path": str(photo), "reason": str(exc)[:300]})
                continue
            found = {}
            for w in words:
                lab = by_word.get(w.strip().lower())
                if lab is None:
                    unmatched[w] = unmatched.get(w, 0) + 1
                else:
                    found[lab["name"]] = lab
            if not found:
                continue
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": photo.relative_to(root).as_posix(), "width": width,
                           "height": height, "keywords": sorted(set(words)),
                           "unknown_category_ids": [lab["id"] for lab in labels if lab["name"] not in found]})
            for lab in found.values():
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": lab["id"],
                                    "iscrowd": 0, "area": 0, "bbox": []})
    coco = {"info": {"description": f"keywords of the photos under {root} (image-level labels; every label a "
                                    "photo's keywords do not name is unknown, not negative)"},
            "licenses": [],
            "categories": [{"id": lab["id"], "name": lab["name"], "isthing": lab.get("isthing", 0),
                            **({"supercategory": lab["supercategory"]} if "supercategory" in lab else {})}
                           for lab in labels],
            "images": images, "annotations": annotations}
    report = {"photos_with_labels": len(images), "labels": len(annotations), "failed": failed,
              "unmatched_keywords": dict(sorted(unmatched.items(), key=lambda kv: -kv[1]))}
    return coco, report
