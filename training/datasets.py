"""COCO-format multi-label datasets, read with pycocotools.

    >>> from training.datasets import CocoMultiLabel
    >>> ds = CocoMultiLabel("samples/coco_subset", "samples/coco_subset/annotations.json", label_names)
    >>> image, target, known = ds[0]

Any COCO-format file works: COCO instances, COCO-Stuff stuff files, COCO panoptic-derived files, and the
annotation page's export. Categories are matched to the label list by name or by a label's synonym
(case-insensitive; ``words``: ``tagger.labels.words_of``), so the full COCO instances or a keyword import meet a
vocabulary that calls their categories otherwise. A label is *known*
for an image only when the file could have annotated it:

- a label whose category is not in the file's ``categories`` is unknown everywhere (e.g. stuff labels in a
  COCO instances file);
- images marked ``stuff_label_quality: "panoptic-merged"`` cannot carry the stuff classes that COCO panoptic
  folds into others (``PANOPTIC_UNANNOTATED``), so those are unknown there;
- an image may list ``unknown_category_ids`` explicitly (the annotation page writes this).

Unknown entries are masked out of the loss and of the metrics, never taught as negatives.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from PIL import Image

from tagger.image import decode_image, open_file
from tagger.labels import key, label_names, words_of
from training.errors import UsageError

# COCO panoptic merges these COCO-Stuff classes into others (fog into sky, hill into mountain, branch/bush/leaves
# into tree) or drops them (ground-other), so an image labelled from panoptic segments says nothing about them.
PANOPTIC_UNANNOTATED = frozenset({"fog", "ground-other", "hill", "branch", "bush", "leaves"})


def load_coco(ann_file: str | Path):
    """``pycocotools.coco.COCO`` for ``ann_file``, without its progress prints on stdout."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


class CocoMultiLabel(torch.utils.data.Dataset):
    """Image-level multi-label view of a COCO-format file: ``(image, target, known)`` per image.

    ``target`` and ``known`` are float/bool tensors of length ``len(label_names)``; image ids are sorted so the
    order is stable. Subclasses override ``_load_image`` or ``_load_target``.
    """

    def __init__(self, root: str | Path, ann_file: str | Path, label_names: list[str], transform=None,
                 words: dict[str, str] | None = None):
        self.root = Path(root)
        self.coco = load_coco(ann_file)
        self.ids = sorted(self.coco.imgs)
        self.label_names = list(label_names)
        self.transform = transform
        name_to_index = {n: i for i, n in enumerate(self.label_names)}
        words = {**{key(n): n for n in self.label_names}, **(words or {})}
        self.cat_to_index = {c["id"]: name_to_index[words[key(c["name"])]]
                             for c in self.coco.loadCats(self.coco.getCatIds()) if key(c["name"]) in words}
        self._annotated = torch.zeros(len(self.label_names), dtype=torch.bool)
        self._annotated[list(self.cat_to_index.values())] = True
        self._panoptic_unknown = torch.tensor([n in PANOPTIC_UNANNOTATED for n in self.label_names])

    def __len__(self) -> int:
        return len(self.ids)

    def _load_image(self, image_id: int) -> Image.Image:
        info = self.coco.imgs[image_id]
        with open_file(self.root / info["file_name"]) as im:
            return im.convert("RGB")

    def _load_target(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        target = torch.zeros(len(self.label_names))
        for ann in self.coco.imgToAnns.get(image_id, []):
            idx = self.cat_to_index.get(ann["category_id"])
            if idx is not None:
                target[idx] = 1.0
        known = self._annotated.clone()
        info = self.coco.imgs[image_id]
        if info.get("stuff_label_quality") == "panoptic-merged":
            known &= ~self._panoptic_unknown
        for cat_id in info.get("unknown_category_ids", []):
            if cat_id in self.cat_to_index:
                known[self.cat_to_index[cat_id]] = False
        known |= target.bool()  # a positive annotation is always known
        return target, known

    def image_path(self, index: int) -> Path:
        return self.root / self.coco.imgs[self.ids[index]]["file_name"]

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = self._load_image(image_id)
        if self.transform is not None:
            image = self.transform(image)
        target, known = self._load_target(image_id)
        return image, target, known

    def targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All targets and known masks, (N, L) each, without loading any image."""
        pairs = [self._load_target(i) for i in self.ids]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


class DatasetError(ValueError):
    """A dataset that cannot be trained on (no usable image, no known label); the message says what to do."""


def check_image(path: Path) -> str | None:
    """``None`` when ``path`` decodes as an image, else the reason. Decodes at reduced size (fast, catches
    truncation)."""
    try:
        with open_file(path) as im:
            im.draft("RGB", (64, 64))
            im.load()
    except FileNotFoundError:
        return "file not found"
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the same thing: skip this image
        return f"does not decode ({type(exc).__name__}: {exc})"
    return None


def pair_sources(roots: list[str], anns: list[str]) -> list[tuple[Path, Path]]:
    """``--data`` / ``--ann`` as (root, annotation file) pairs: one root for every file, or one root per file.

    Raises:
        DatasetError: the counts do not pair up, or an annotation file is missing.
    """
    if not anns:
        raise DatasetError("no annotation file given: pass --ann FILE (COCO format)")
    if len(roots) == 1:
        roots = roots * len(anns)
    if len(roots) != len(anns):
        raise DatasetError(f"{len(roots)} --data roots for {len(anns)} --ann files: give one root for all "
                           "files, or one per file in the same order")
    for ann in anns:
        if not Path(ann).is_file():
            raise DatasetError(f"annotation file not found: {ann}")
    return [(Path(r), Path(a)) for r, a in zip(roots, anns)]


class LabelledImages(torch.utils.data.Dataset):
    """Images from one or more COCO-format files, merged per image file: ``(image, target, known)``.

    A COCO instances file and a COCO-Stuff stuff file for the same photos merge into one row per photo: a label
    is positive when any file says so and known when any file could have said so. Build it with ``from_coco``,
    which also reports what it skipped.
    """

    def __init__(self, paths: list[Path], targets: torch.Tensor, known: torch.Tensor, label_names: list[str],
                 transform=None, min_side: int | None = None, records: list[dict] | None = None):
        self.paths, self._targets, self._known = list(paths), targets, known
        self.label_names, self.transform = list(label_names), transform
        self.min_side = min_side  # decode as the handler does: reduced to this shorter side (None: full size)
        self.records = list(records) if records is not None else [{} for _ in self.paths]  # COCO image records

    @classmethod
    def from_coco(cls, sources: list[tuple[Path, Path]], label_names: list[str], *, transform=None,
                  min_side: int | None = None, check_images: bool = True,
                  words: dict[str, str] | None = None, need_positive: bool = True) -> tuple["LabelledImages", dict]:
        """Read and merge ``sources`` ((root, annotation file) pairs); returns ``(dataset, report)``.

        ``report`` counts images, skipped images (with the reason for each) and categories outside the
        vocabulary (ignored). Raises ``DatasetError`` when nothing usable remains.
        """
        rows: dict[Path, list] = {}
        records: dict[Path, dict] = {}
        ignored: dict[str, int] = {}
        skipped: list[dict] = []
        for root, ann in sources:
            try:
                ds = CocoMultiLabel(root, ann, label_names, words=words)
            except (ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{ann} is not a readable COCO-format file ({type(exc).__name__}: {exc})") \
                    from exc
            known_cats = set(ds.cat_to_index)
            for cat in ds.coco.loadCats(ds.coco.getCatIds()):
                if cat["id"] not in known_cats:
                    ignored[cat["name"]] = ignored.get(cat["name"], 0) + len(ds.coco.catToImgs.get(cat["id"], []))
            inside = Path(root).resolve()
            for image_id in ds.ids:
                target, known = ds._load_target(image_id)
                path = (root / ds.coco.imgs[image_id]["file_name"]).resolve()
                if not path.is_relative_to(inside):  # "../../etc/x" or an absolute path: never read
                    skipped.append({"path": str(ds.coco.imgs[image_id]["file_name"]),
                                    "reason": f"its file_name leaves the data folder {inside}"})
                    continue
                if path in rows:
                    rows[path][0] = torch.maximum(rows[path][0], target)
                    rows[path][1] |= known
                else:
                    rows[path] = [target, known]
                    records[path] = ds.coco.imgs[image_id]
        paths = []
        for path in rows:
            reason = check_image(path) if check_images else None
            if reason:
                skipped.append({"path": str(path), "reason": reason})
            else:
                paths.append(path)
        report = {"images": len(paths), "skipped": skipped, "ignored_categories": ignored,
                  "sources": [[str(r), str(a)] for r, a in sources]}
        if not paths:
            raise DatasetError(f"no usable image in {', '.join(str(a) for _, a in sources)}"
                               f" ({len(skipped)} skipped): check that --data points at the folder that the "
                               "files' file_name entries are relative to")
        targets = torch.stack([rows[p][0] for p in paths])
        known = torch.stack([rows[p][1] for p in paths])
        if need_positive and not (targets.bool() & known).any():
            raise DatasetError("the annotation files hold no positive label of the vocabulary: check that their "
                               "category names are COCO-Stuff names (e.g. 'sea', 'person') or pass --labels")
        return cls(paths, targets, known, label_names, transform, min_side, [records[p] for p in paths]), report

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices, transform=None) -> "LabelledImages":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return LabelledImages([self.paths[i] for i in idx.tolist()], self._targets[idx], self._known[idx],
                              self.label_names, transform if transform is not None else self.transform, self.min_side,
                              [self.records[i] for i in idx.tolist()])

    def image_path(self, index: int) -> Path:
        return self.paths[index]

    def targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._targets, self._known

    def __getitem__(self, index: int):
        image = decode_image(self.paths[index].read_bytes(), min_side=self.min_side, max_pixels=10**9,
                             max_bytes=1 << 31)
        if self.transform is not None:
            image = self.transform(image)
        return image, self._targets[index], self._known[index]


# ---- the training tool's data: train, validation, and what was left out

def load_datasets(args, labels: list[dict]):
    """(train, val or None, report); val is --val-ann, or a seeded --val-split of the training photos. Categories
    meet ``labels`` by name or synonym."""
    names, words = label_names(labels), words_of(labels)
    full, report = LabelledImages.from_coco(pair_sources(args.data, args.ann), names, words=words)
    if args.val_ann:
        val, vreport = LabelledImages.from_coco(pair_sources([args.val_data or args.data[0]], [args.val_ann]), names,
                                                words=words, need_positive=False)  # photos a label is absent from
        report["validation"] = vreport
        return full, val, report
    if args.recipe == "prior":
        return full, None, report
    if not 0 < args.val_split < 1:
        raise UsageError("--val-split must be between 0 and 1 (or pass --val-ann FILE)")
    n_val = max(1, round(len(full) * args.val_split))
    if n_val >= len(full):
        raise DatasetError(f"only {len(full)} usable photos: too few to hold {n_val} out for validation")
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed)).tolist()
    report["validation"] = {"split": args.val_split, "images": n_val}
    return full.subset(sorted(perm[n_val:])), full.subset(sorted(perm[:n_val])), report


def print_report(report: dict) -> None:
    print(f"data: {report['images']} photos from {len(report['sources'])} annotation file(s)"
          + (f", validation {report['validation']['images']}" if "validation" in report else ""))
    for rep in [report] + ([report["validation"]] if "sources" in report.get("validation", {}) else []):
        if rep["skipped"]:
            print(f"skipped {len(rep['skipped'])} images that cannot be used:")
            for s in rep["skipped"][:20]:
                print(f"  {s['path']}: {s['reason']}")
        if rep["ignored_categories"]:
            cats = rep["ignored_categories"]
            print(f"ignored {len(cats)} categories not in the vocabulary ({sum(cats.values())} image labels): "
                  + ", ".join(sorted(cats)[:15]) + (" ..." if len(cats) > 15 else ""))
