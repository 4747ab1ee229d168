"""COCO-format multi-label datasets, read with pycocotools.

    >>> from training.datasets import CocoMultiLabel
    >>> ds = CocoMultiLabel("samples/coco_subset", "samples/coco_subset/annotations.json", label_names)
    >>> image, target, known = ds[0]

Any COCO-format file works: COCO instances, COCO-Stuff stuff files, COCO panoptic-derived files, and the
annotation page's export. Categories are matched to the label list by COCO-Stuff name. A label is *known*
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

    def __init__(self, root: str | Path, ann_file: str | Path, label_names: list[str], transform=None):
        self.root = Path(root)
        self.coco = load_coco(ann_file)
        self.ids = sorted(self.coco.imgs)
        self.label_names = list(label_names)
        self.transform = transform
        name_to_index = {n: i for i, n in enumerate(self.label_names)}
        self.cat_to_index = {c["id"]: name_to_index[c["name"]]
                             for c in self.coco.loadCats(self.coco.getCatIds()) if c["name"] in name_to_index}
        self._annotated = torch.zeros(len(self.label_names), dtype=torch.bool)
        self._annotated[list(self.cat_to_index.values())] = True
        self._panoptic_unknown = torch.tensor([n in PANOPTIC_UNANNOTATED for n in self.label_names])

    def __len__(self) -> int:
        return len(self.ids)

    def _load_image(self, image_id: int) -> Image.Image:
        info = self.coco.imgs[image_id]
        with Image.open(self.root / info["file_name"]) as im:
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
