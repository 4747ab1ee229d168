"""The label vocabulary: ``labels.json`` beside this file is the default list of labels, in model output order.

Everything else (dataset matching, the model head size, the handler, the gateway, the annotation page) reads the
list from here or from the metadata record a model carries, which is copied from the labels file it was trained
with (``python -m training --labels FILE``; the annotation page writes one for its retrain).

A label record: ``{"id": int, "name": str, "isthing": 0|1}`` and, for labels beyond the default 34, optionally
``"synonyms": [str, ...]`` (other names a keyword or an annotation file may use), ``"kind": "object"|"scene"``,
``"detector_class": "dog"`` (the COCO object whose detector score is its evidence) and ``"imagenet": [wnid, ...]``
(ImageNet classes whose summed probability is its evidence). Names and synonyms are unique case-insensitively.

    labels = load_labels("my_labels.json")       # checked, normalised records
    check_name("dog")                            # "dog"; raises LabelNameError for a name a keyword cannot be
"""
from __future__ import annotations

import json
from pathlib import Path

DEFAULT_LABELS_FILE = Path(__file__).with_name("labels.json")
MAX_NAME = 64
#: What keyword hierarchies and keyword lists use as separators (Lightroom |, digiKam /, lists , and ;): never in a
#: name, so a label is always one keyword in a sidecar.
SEPARATORS = "|/\\,;"
FIRST_ADDED_ID = 1000  # ids given to labels without one: above COCO-Stuff's 1-182


class LabelNameError(ValueError):
    """A label name or synonym that cannot be one (empty, too long, unprintable, holding a separator)."""


def check_name(name: object) -> str:
    """``name`` without surrounding spaces, when it can name a label: 1 to ``MAX_NAME`` printable characters, none of
    ``SEPARATORS``.

    Raises:
        LabelNameError: saying what is wrong.
    """
    if not isinstance(name, str):
        raise LabelNameError("a label name must be a string")
    clean = name.strip()
    if not clean:
        raise LabelNameError("a label name must not be empty")
    if len(clean) > MAX_NAME:
        raise LabelNameError(f"label name {clean[:20]!r}... is {len(clean)} characters; at most {MAX_NAME}")
    if not clean.isprintable():
        raise LabelNameError(f"label name {clean!r} holds control or invisible characters")
    bad = sorted({c for c in clean if c in SEPARATORS})
    if bad:
        raise LabelNameError(f"label name {clean!r} holds {' '.join(bad)}, which keyword hierarchies use as "
                             "separators (Lightroom |, digiKam /, lists , and ;)")
    return clean


def key(name: str) -> str:
    """How names compare: case-insensitively, surrounding spaces ignored."""
    return name.strip().casefold()


def normalise(labels: list[dict]) -> list[dict]:
    """Checked records: names and synonyms valid and unique (case-insensitively), ids unique (a missing one is
    given from ``FIRST_ADDED_ID`` on), ``isthing`` 0 or 1, ``synonyms`` a list.

    Raises:
        ValueError: naming the first problem.
    """
    if not labels:
        raise ValueError("the label list is empty")
    taken: dict[str, str] = {}
    ids: set[int] = set()
    out = []
    for i, raw in enumerate(labels):
        if not isinstance(raw, dict) or "name" not in raw:
            raise ValueError(f"label {i}: a record needs a name, like {{\"name\": \"dog\"}}")
        lab = dict(raw)
        lab["name"] = check_name(lab["name"])
        synonyms = lab.get("synonyms") or []
        if not isinstance(synonyms, list):
            raise ValueError(f"label {lab['name']!r}: synonyms must be a list of names")
        lab["synonyms"] = [check_name(s) for s in synonyms] if synonyms else []
        for word in (lab["name"], *lab["synonyms"]):
            if key(word) in taken:
                raise ValueError(f"{word!r} names both {taken[key(word)]!r} and {lab['name']!r}: names and synonyms "
                                 "must be unique (case-insensitively)")
            taken[key(word)] = lab["name"]
        if "id" not in lab:
            lab["id"] = FIRST_ADDED_ID + i
        lab["id"] = int(lab["id"])
        if lab["id"] in ids:
            raise ValueError(f"label {lab['name']!r}: id {lab['id']} is another label's too")
        ids.add(lab["id"])
        lab["isthing"] = int(bool(lab.get("isthing", lab.get("kind") == "object")))
        if not lab["synonyms"]:
            del lab["synonyms"]
        out.append(lab)
    return out


def load_labels(path: str | Path | None = None) -> list[dict]:
    """Label records in output order (see the module docstring), checked.

    Raises:
        ValueError: the file has a bad or duplicate name, or no labels.
    """
    data = json.loads(Path(path or DEFAULT_LABELS_FILE).read_text())
    labels = data["labels"] if isinstance(data, dict) else data
    try:
        return normalise(labels)
    except ValueError as exc:
        raise ValueError(f"{path or DEFAULT_LABELS_FILE}: {exc}") from None


def label_names(labels: list[dict] | None = None) -> list[str]:
    """Names in output order (of ``labels``, or of the default vocabulary)."""
    return [lab["name"] for lab in (labels if labels is not None else load_labels())]


def words_of(labels: list[dict]) -> dict[str, str]:
    """Every name and synonym (``key``-ed) -> the label's name: how annotation files and keywords are matched."""
    out = {}
    for lab in labels:
        for word in (lab["name"], *lab.get("synonyms", ())):
            out.setdefault(key(word), lab["name"])
    return out
