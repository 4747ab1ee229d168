import json
import pickle

import torch

from tagger.labels import label_names
from tests.conftest import COCO
from training.datasets import PANOPTIC_UNANNOTATED, CocoMultiLabel, LabelledImages
from training.legacy import safe_unpickle


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
    assert targets.shape == (113, 34)
    assert int(targets[:, names.index("person")].sum()) == 59


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
    assert image.shape == (3, 224, 224)
    assert target.dtype == torch.float32
    assert known.dtype == torch.bool


def test_a_file_name_leaving_the_data_folder_is_skipped_unread(tmp_path):
    """COCO file_name entries such as ../outside.jpg or /etc/passwd are reported and never opened."""
    data = json.loads((COCO / "annotations.json").read_text())
    data["images"] = data["images"][:3]
    outside = tmp_path / "outside.jpg"
    outside.write_bytes((COCO / "images" / data["images"][0]["file_name"].split("/")[-1]).read_bytes())
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    for image in data["images"]:
        name = image["file_name"].split("/")[-1]
        (root / "images" / name).write_bytes((COCO / "images" / name).read_bytes())
        image["file_name"] = f"images/{name}"
    data["images"][1]["file_name"] = "../outside.jpg"
    data["images"][2]["file_name"] = "/etc/passwd"
    (root / "a.json").write_text(json.dumps(data))
    ds, report = LabelledImages.from_coco([(root, root / "a.json")], label_names(), need_positive=False)
    assert len(ds) == 1
    assert report["images"] == 1
    assert {s["path"] for s in report["skipped"]} == {"../outside.jpg", "/etc/passwd"}
    assert all("leaves the data folder" in s["reason"] for s in report["skipped"])


def test_a_pickle_of_shared_nested_lists_is_checked_once_per_list(tmp_path):
    """Forty levels of [x, x] are 2**40 paths to walk but 40 lists: the plain-data check visits each list once."""
    value = []
    for _ in range(40):
        value = [value, value]
    (tmp_path / "nested.pkl").write_bytes(pickle.dumps(value))
    assert (tmp_path / "nested.pkl").stat().st_size < 1000
    loaded = safe_unpickle(tmp_path / "nested.pkl")
    assert isinstance(loaded, list)
    assert loaded[0] is loaded[1]
