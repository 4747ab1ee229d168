"""``import``: the keywords people typed (sidecars, and XMP ``dc:subject`` / IPTC ``Keywords`` inside the photos)
as a COCO-format annotation file the training tool reads.

    coco, report = import_keywords(Path("~/Pictures").expanduser(), labels, synonyms={"ocean": "sea"})
    # python -m training --data ~/Pictures --ann keywords.json

A keyword that names a label (case-insensitive, or through ``synonyms``) is a positive; a photo's other labels
are unknown (``unknown_category_ids``), never negatives. The tagger's own entries are never imported: the
``dc:subject`` keywords its sidecar record says it added, and any keyword under its parent name (``Tagger|sea``,
``Tagger/sea``), so the model never learns from its own guesses.

With ``new_labels=N``, every keyword used on at least N photos that names no label becomes a label of its own (a
keyword a label cannot be, one holding | or /, is reported and left out). For those, a photo that carries keywords
counts as a negative when it lacks the keyword (people who keyword a folder keyword what they see); a photo without
any keyword is unknown. ``report["vocabulary"]`` is the vocabulary to train with: the given labels and the new ones,
and ``report["new_labels"]`` says the evidence found for each (a COCO object, ImageNet classes, or examples alone).
"""
from __future__ import annotations

import json
from pathlib import Path

from photo_library.files import SIDECAR_NAMES, photos_in, sidecar_path
from photo_library.xmp import (
    HIERARCHICAL,
    MODEL_VERSION,
    SUBJECT,
    TAGGER_SUBJECTS,
    TAGS_LIST,
    UNSAFE_NAME,
    ExifTools,
    XmpError,
    read_tags,
    unsafe,
)
from tagger.image import open_file
from tagger.labels import FIRST_ADDED_ID, LabelNameError, check_name, key, words_of
from training.evidence import evidence

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


def keywords_of(root: Path, parent: str) -> tuple[list[tuple[Path, list[str], int, int]], list[dict]]:
    """``([(photo, the user's keywords, width, height)], failed)`` for every photo under ``root``."""
    from training.datasets import check_image  # loads torch: only when a folder is imported

    found, failed = [], []
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
                with open_file(photo) as im:
                    width, height = im.size
            except (XmpError, OSError, ValueError) as exc:
                failed.append({"path": str(photo), "reason": str(exc)[:300]})
                continue
            found.append((photo, [w.strip() for w in words if w.strip()], width, height))
    return found, failed


def new_labels_from(photos: list, labels: list[dict], synonyms: dict[str, str], at_least: int) -> tuple[list, list]:
    """``(new label records, refused [(keyword, reason)])``: the keywords naming no label that at least
    ``at_least`` photos carry, most used first, each named as it is spelled most often, with the evidence found
    for it."""
    known = set(words_of(labels)) | set(synonyms)
    photos_with: dict[str, set] = {}
    spellings: dict[str, dict[str, int]] = {}
    for i, (_, words, _, _) in enumerate(photos):
        for w in words:
            if key(w) not in known:
                photos_with.setdefault(key(w), set()).add(i)
                counts = spellings.setdefault(key(w), {})
                counts[w] = counts.get(w, 0) + 1
    spelling = {k: max(counts, key=counts.get) for k, counts in spellings.items()}
    new, refused = [], []
    next_id = max([lab["id"] for lab in labels] + [FIRST_ADDED_ID - 1]) + 1
    for k in sorted(photos_with, key=lambda k: (-len(photos_with[k]), k)):
        if len(photos_with[k]) < at_least:
            continue
        try:
            name = check_name(spelling[k])
        except LabelNameError as exc:
            refused.append((spelling[k], str(exc)))
            continue
        found = evidence({"name": name})
        new.append({"id": next_id, "name": name, "isthing": int(bool(found["detector"])),
                    "kind": "object" if found["detector"] else "scene", "evidence": found["source"],
                    "photos": len(photos_with[k])})
        next_id += 1
    return new, refused


def import_keywords(root: Path, labels: list[dict], *, synonyms: dict[str, str] | None = None,
                    parent: str = "Tagger", new_labels: int | None = None) -> tuple[dict, dict]:
    """``(coco, report)`` for the photos under ``root`` that have at least one keyword naming a label; photos that
    do not decode are reported in ``report["failed"]``. With ``new_labels``, see the module docstring:
    ``report["vocabulary"]`` is then the vocabulary to train with and ``report["new_labels"]`` the new ones."""
    photos, failed = keywords_of(root, parent)
    synonyms = dict(synonyms or {})
    new, refused = new_labels_from(photos, labels, synonyms, new_labels) if new_labels else ([], [])
    new_names = {lab["name"] for lab in new}
    vocabulary = labels + [{k: v for k, v in lab.items() if k in ("id", "name", "isthing", "kind")} for lab in new]
    by_word = {key(w): lab for lab in vocabulary for w in (lab["name"], *lab.get("synonyms", ()))}
    by_name = {lab["name"]: lab for lab in vocabulary}
    for word, name in synonyms.items():
        by_word[word] = by_name[name]
    images, annotations, unmatched = [], [], {}
    for photo, words, width, height in photos:
        found = {}
        for w in words:
            lab = by_word.get(key(w))
            if lab is None:
                unmatched[w] = unmatched.get(w, 0) + 1
            else:
                found[lab["name"]] = lab
        if not found and not (new_names and words):
            continue
        image_id = len(images) + 1
        # a keyworded photo is a negative of the new labels it lacks; every other label it does not name is unknown
        unknown = [lab["id"] for lab in vocabulary if lab["name"] not in found
                   and not (lab["name"] in new_names and words)]
        images.append({"id": image_id, "file_name": photo.relative_to(root).as_posix(), "width": width,
                       "height": height, "keywords": sorted(set(words)), "unknown_category_ids": unknown})
        for lab in found.values():
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": lab["id"],
                                "iscrowd": 0, "area": 0, "bbox": []})
    coco = {"info": {"description": f"keywords of the photos under {root} (image-level labels; every label a "
                                    "photo's keywords do not name is unknown, not negative, but the new labels "
                                    "made from keywords, which a keyworded photo lacking them is a negative of)"},
            "licenses": [],
            "categories": [{"id": lab["id"], "name": lab["name"], "isthing": lab.get("isthing", 0),
                            **{k: lab[k] for k in ("supercategory", "synonyms", "kind") if k in lab}}
                           for lab in vocabulary],
            "images": images, "annotations": annotations}
    report = {"photos_with_labels": len(images), "labels": len(annotations), "failed": failed,
              "unmatched_keywords": dict(sorted(unmatched.items(), key=lambda kv: -kv[1])),
              "new_labels": new, "refused_keywords": refused, "vocabulary": vocabulary}
    return coco, report
