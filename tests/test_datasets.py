import json

import torch

from tagger.labels import label_names
from tests.conftest import COCO
from training.datasets import PANOPTIC_UNANNOTATED, CocoMultiLabel


def test_panoptic_images_mask_the_labels_panoptic_cannot_carry():
    names = label_names()
    ds = CocoMultiLabel(COCO, COCO / "annotations.json", names)
    targets, known = ds.targets()
    quality = [ds.coco.imgs[i]["stuff_label_quality"] for i in ds.ids]
    folded = [names.index(n) for n in PANOPTIC_UNANNOTATED]
    for row, q in enumerate(quality):
        if q == "panoptic-merged":
            assert not known[row, folded].any()
        else:
            assert known[row].all()
    assert targets.shape == (113, 34) and int(targets[:, names.index("person")].sum()) == 59


def test_labels_missing_from_a_files_categories_are_unknown(tmp_path):
    """A COCO instances-style file (things only) says nothing about stuff labels."""
    data = json.loads((COCO / "annotations.json").read_text())
    data["categories"] = [c for c in data["categories"] if c["isthing"]]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] <= 91]
    ann = tmp_path / "things.json"
    ann.write_text(json.dumps(data))
    names = label_names()
    ds = CocoMultiLabel(COCO, ann, names)
    _, known = ds.targets()
    assert not known[:, names.index("sea")].any()
    assert known[:, names.index("car")].all()


def test_item_is_image_target_known():
    from tagger.presets import default_preprocessing, eval_transform

    ds = CocoMultiLabel(COCO, COCO / "annotations.json", label_names(),
                        eval_transform(default_preprocessing("efficientnet_lite0")))
    image, target, known = ds[0]
    assert image.shape == (3, 224, 224) and target.dtype == torch.float32 and known.dtype == torch.bool
