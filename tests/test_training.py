"""The training tool, `python -m training`: flags, both recipes, checkpoints, resume, legacy data, errors."""
from __future__ import annotations

import collections
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from tagger.labels import label_names, load_labels
from tests.conftest import COCO, REPO
from training import import_legacy
from training.cli import cli, parse_args

ORIGINAL_FLAGS = ["--workers", "--epochs", "--epoch_step", "--device_ids", "--start-epoch", "-b", "--batch-size",
                  "--lr", "--lrp", "--momentum", "--weight-decay", "--wd", "--print-freq", "-p", "--resume",
                  "--result"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """The first 24 bundled photos (those with a label first) as their own COCO file: for slow paths."""
    data = json.loads((COCO / "annotations.json").read_text())
    with_label = {a["image_id"] for a in data["annotations"]}
    images = sorted(data["images"], key=lambda i: (i["id"] not in with_label, i["id"]))[:24]
    ids = {i["id"] for i in images}
    data["images"] = images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    path = tmp_path_factory.mktemp("tiny") / "tiny.json"
    path.write_text(json.dumps(data))
    return path


def run(argv):
    code = cli([str(a) for a in argv])
    return code


@pytest.mark.slow
def test_help_shows_every_original_flag_with_its_default():
    out = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    for flag in ORIGINAL_FLAGS + ["--data", "--ann", "--val-ann", "--val-split", "--labels", "--arch",
                                  "--pretrained", "--output", "--recipe"]:
        assert flag in out, flag
    parser_actions = [a for a in __import__("training.cli", fromlist=["x"]).get_args_parser()._actions
                      if a.dest != "help"]
    assert all("default" in a.help for a in parser_actions), [a.dest for a in parser_actions
                                                                if "default" not in a.help]


def test_config_file_sits_between_defaults_and_command_line(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epochs": 7, "lr": 0.5}))
    args = parse_args(["--config", str(cfg), "--lr", "0.2"])
    assert (args.epochs, args.lr, args.momentum) == (7, 0.2, 0.9)


@pytest.mark.slow
def test_head_only_training_writes_everything_and_the_archive_serves_it(tmp_path, cache_dir):
    out = tmp_path / "run"
    result = tmp_path / "result.csv"
    assert run(["--data", COCO, "--output", out, "--cache-dir", cache_dir, "--epochs", 4, "--epoch_step", 2,
                "--result", result, "-j", 0]) == 0
    for name in ("best.pt", "last.pt", "metrics.json", "args.json", "meta.json", "plots/loss_map.png",
                 "plots/per_label_ap.png", "plots/pr_curves.png"):
        assert (out / name).is_file(), name
    assert (out / "plots/loss_map.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    assert metrics["epochs"][2]["lr"] == pytest.approx(0.01)  # x0.1 from --epoch_step 2 on
    assert all(e["cached_features"] for e in metrics["epochs"])
    best = metrics["best"]
    assert {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "per_label_ap"} <= set(best)
    assert best["per_label_ap"]["fire hydrant"] is None  # no known positive: not applicable, never 0
    assert best["mAP"] > 0.2
    args = json.loads((out / "args.json").read_text())
    assert args["epochs"] == 4
    assert args["arch"] == "efficientnet_lite0"
    assert args["lrp"] == 0.0
    assert args["detector"] == "ssd_mobilenet_v2"  # "auto", resolved
    ckpt = torch.load(out / "best.pt", weights_only=True)
    meta = ckpt["meta"]
    assert meta["thresholds"] != [0.5] * 34
    assert meta["arch"] == "efficientnet_lite0"
    assert ckpt["epoch"] == metrics["best_epoch"]
    # the detector joins after the best epoch: fused on the validation photos, thresholds calibrated on that
    assert meta["detector"]["name"] == "ssd_mobilenet_v2_coco_2018_03_29"
    assert "detector" in meta["recipe"]
    assert meta["metrics"]["fusion"] in ("fitted", "detector")
    assert metrics["best"]["mAP"] > best["classifier_only"]
    assert meta["preprocessing"]["squash"] is True
    rows = result.read_text().splitlines()
    header = rows[0].split(",")
    assert header[0] == "image"
    assert header[-1] == "tags"
    assert header[1:-1] == [lab["name"] for lab in meta["labels"]]
    assert len(rows) - 1 == metrics["dataset"]["validation"]["images"]

    from training.archive import build_archive

    mar = build_archive(out / "best.pt", tmp_path / "tagger-7.7.mar", version="7.7")

    with zipfile.ZipFile(mar) as z:
        assert json.loads(z.read("meta.json"))["thresholds"] == meta["thresholds"]


@pytest.mark.slow
def test_detector_none_builds_a_classifier_only_model(tmp_path, cache_dir, tiny_coco):
    out = tmp_path / "plain"
    assert run(["--data", COCO, "--ann", tiny_coco, "--output", out, "--cache-dir", cache_dir, "--epochs", 1,
                "--detector", "none", "--resize-mode", "crop", "-j", 0]) == 0
    meta = torch.load(out / "best.pt", weights_only=True)["meta"]
    assert meta.get("detector") is None
    assert "squash" not in json.dumps(meta["recipe"])
    assert meta["preprocessing"]["squash"] is False


@pytest.mark.slow
def test_resume_continues_to_the_same_result(tmp_path, cache_dir):
    common = ["--data", COCO, "--cache-dir", cache_dir, "--epoch_step", 3, "-j", 0, "--lr", 0.05]
    assert run(["--output", tmp_path / "full", "--epochs", 5, *common]) == 0
    assert run(["--output", tmp_path / "half", "--epochs", 2, *common]) == 0
    assert run(["--output", tmp_path / "half", "--epochs", 5, "--resume", tmp_path / "half/last.pt", *common]) == 0
    full = torch.load(tmp_path / "full/last.pt", weights_only=True)
    half = torch.load(tmp_path / "half/last.pt", weights_only=True)
    assert half["epoch"] == full["epoch"] == 5
    for key in ("head.weight", "head.bias"):
        torch.testing.assert_close(half["model"][key], full["model"][key], rtol=1e-5, atol=1e-6)
    assert [h["loss"] for h in half["history"]] == pytest.approx([h["loss"] for h in full["history"]], rel=1e-5)
    assert half["optimizer"]["state"]  # momentum buffers restored, not restarted
    best_full = json.loads((tmp_path / "full/metrics.json").read_text())["best"]["mAP"]
    best_half = json.loads((tmp_path / "half/metrics.json").read_text())["best"]["mAP"]
    assert best_half == pytest.approx(best_full, abs=1e-4)


@pytest.mark.slow
def test_cached_epochs_match_full_forward_epochs(tmp_path, cache_dir, tiny_coco):
    common = ["--ann", tiny_coco, "--data", COCO, "--cache-dir", cache_dir, "--epochs", 2, "-j", 0, "-b", 8]
    assert run(["--output", tmp_path / "cached", *common]) == 0
    assert run(["--output", tmp_path / "full", "--no-cache", *common]) == 0
    a = json.loads((tmp_path / "cached/metrics.json").read_text())["epochs"]
    b = json.loads((tmp_path / "full/metrics.json").read_text())["epochs"]
    assert not b[0]["cached_features"]
    assert [e["loss"] for e in a] == pytest.approx([e["loss"] for e in b], rel=1e-3)
    assert [e["mAP"] for e in a] == pytest.approx([e["mAP"] for e in b], abs=5e-3)


@pytest.mark.slow
def test_resnet18_fine_tuning_with_train_preset(tmp_path, tiny_coco):
    out = tmp_path / "r18"
    assert run(["--arch", "resnet18", "--pretrained", "none", "--lrp", 0.1, "--lr", 0.01, "--epochs", 1,
                "-b", 8, "-j", 0, "--ann", tiny_coco, "--data", COCO, "--output", out]) == 0
    ckpt = torch.load(out / "best.pt", weights_only=True)
    assert ckpt["meta"]["arch"] == "resnet18"
    assert "lrp 0.1" in ckpt["meta"]["recipe"]
    assert not json.loads((out / "metrics.json").read_text())["epochs"][0]["cached_features"]
    assert len(ckpt["optimizer"]["param_groups"]) == 2  # head at lr, backbone at lr*lrp
    assert ckpt["optimizer"]["param_groups"][1]["lr"] == pytest.approx(0.001)


def test_frozen_backbone_keeps_batchnorm_in_eval_mode(tiny_coco):
    """With --lrp 0 --no-cache the backbone runs every epoch; its BatchNorm statistics must not move."""
    from training.train import build

    args = parse_args(["--arch", "resnet18", "--pretrained", "none"])
    model = build("resnet18", load_labels(), args, imagenet_prior=False, pretrained=False)
    before = model.backbone.bn1.running_mean.clone()
    model.train()
    model.backbone.eval()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.backbone.bn1.running_mean, before)


@pytest.mark.slow
def test_original_checkpoint_resumes_and_says_what_it_found(tmp_path, tiny_coco, capsys):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=34)
    orig = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "arch": "resnet18", "best_score": 70.5,
                "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, orig)
    out = tmp_path / "cont"
    assert run(["--resume", orig, "--epochs", 4, "--ann", tiny_coco, "--data", COCO, "-b", 8, "-j", 0,
                "--output", out, "--cache-dir", tmp_path / "c"]) == 0
    said = capsys.readouterr().out
    assert "original-format checkpoint (arch resnet18, epoch 3, best_score 70.5" in said
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 4
    assert ckpt["meta"]["arch"] == "resnet18"  # arch taken from the checkpoint
    assert [h["epoch"] for h in ckpt["history"]] == [4]
    # the backbone is the original's (frozen with --lrp 0), the fc became the head
    torch.testing.assert_close(ckpt["model"]["backbone.layer1.0.conv1.weight"], net.layer1[0].conv1.weight)

    from training.evaluate import get_args_parser
    from training.evaluate import main as evaluate_main

    summary = evaluate_main(get_args_parser().parse_args(
        ["--checkpoint", str(orig), "--ann", str(tiny_coco), "--data", str(COCO), "--out", str(tmp_path / "e.json")]))
    assert summary["n_images"] == 24
    assert 0 <= summary["mAP"] <= 1


def test_checkpoints_that_would_run_code_or_do_not_fit_are_refused(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "epoch": Evil()}, bad)
    assert run(["--resume", bad, "--output", tmp_path / "o"]) == 2
    assert "weights_only" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()

    wrong = tmp_path / "wrong.pt"
    torch.save({"epoch": 1, "state_dict": {"fc.weight": torch.zeros(80, 512), "fc.bias": torch.zeros(80)}}, wrong)
    assert run(["--resume", wrong, "--output", tmp_path / "o"]) == 2
    assert "80 outputs but the vocabulary has 34" in capsys.readouterr().err


def _pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj))


def _newdata(tmp_path):
    nd = tmp_path / "newdata"
    (nd / "images").mkdir(parents=True)
    select = ["sea", "person", "car", "umbrella"]
    _pickle(nd / "select.pkl", select)
    files = sorted(COCO.glob("images/*.jpg"))[:6]
    for i, f in enumerate(files):
        shutil.copy(f, nd / "images" / f.name)
        if i == 5:
            continue  # no label pickle: left out and counted
        value = ["person", "umbrella"] if i % 2 else [1, 0, 1, 0]
        _pickle(nd / "labels" / f"{f.stem}.pkl", value)
    return nd, files


def test_import_legacy_newdata_trains(tmp_path, capsys):
    nd, files = _newdata(tmp_path)
    out = tmp_path / "newdata.json"
    report = import_legacy.main(import_legacy.get_args_parser().parse_args([str(nd), "--out", str(out)]))
    assert report["images"] == 5
    assert report["unlabelled"] == [files[5].name]
    assert report["labels_outside_vocabulary"] == ["umbrella"]

    from training.datasets import LabelledImages

    names = label_names()
    ds, rep = LabelledImages.from_coco([(nd, out)], names)
    targets, known = ds.targets()
    assert targets[0, names.index("sea")] == 1
    assert targets[0, names.index("car")] == 1
    assert targets[1, names.index("person")] == 1
    assert targets[1, names.index("sea")] == 0
    assert known[1, 0]
    assert not known[:, names.index("tree")].any()  # not in select.pkl: unknown, never negative
    assert rep["ignored_categories"] == {"umbrella": 2}


@pytest.mark.slow
def test_a_pickle_that_asks_for_code_is_refused_and_nothing_runs(tmp_path, capsys):
    from training.legacy import LegacyError, safe_unpickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    nd, files = _newdata(tmp_path)
    evil = nd / "labels" / f"{files[0].stem}.pkl"
    evil.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(LegacyError, match=f"{evil.name}: refused: it asks for (posix|os).system"):
        safe_unpickle(evil)
    r = subprocess.run([sys.executable, "-m", "training.import_legacy", str(nd), "--out", str(tmp_path / "x.json")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2
    assert evil.name in r.stderr
    assert "refused" in r.stderr
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "x.json").exists()

    (tmp_path / "od.pkl").write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(LegacyError, match="collections.OrderedDict"):
        safe_unpickle(tmp_path / "od.pkl")
    (tmp_path / "set.pkl").write_bytes(pickle.dumps({"sea"}))
    with pytest.raises(LegacyError, match="set"):
        safe_unpickle(tmp_path / "set.pkl")


def test_instances_and_stuff_files_merge_per_image_and_unknowns_stay_masked(tmp_path):
    from training.datasets import LabelledImages
    from training.engine import masked_bce

    data = json.loads((COCO / "annotations.json").read_text())
    things = dict(data, categories=[c for c in data["categories"] if c["isthing"]],
                  annotations=[a for a in data["annotations"] if a["category_id"] <= 91])
    stuff = dict(data, categories=[c for c in data["categories"] if not c["isthing"]],
                 annotations=[a for a in data["annotations"] if a["category_id"] > 91])
    (tmp_path / "things.json").write_text(json.dumps(things))
    (tmp_path / "stuff.json").write_text(json.dumps(stuff))
    names = label_names()
    merged, _ = LabelledImages.from_coco([(COCO, tmp_path / "things.json"), (COCO, tmp_path / "stuff.json")], names)
    whole, _ = LabelledImages.from_coco([(COCO, COCO / "annotations.json")], names)
    assert torch.equal(merged.targets()[0], whole.targets()[0])
    assert torch.equal(merged.targets()[1], whole.targets()[1])
    only_things, _ = LabelledImages.from_coco([(COCO, tmp_path / "things.json")], names)
    assert not only_things.targets()[1][:, names.index("sea")].any()
    # an unknown entry adds nothing to the loss, whatever the logit
    logits = torch.tensor([[5.0, -5.0]])
    y = torch.tensor([[0.0, 0.0]])
    assert masked_bce(logits, y, torch.tensor([[0.0, 1.0]]), 1) == pytest.approx(
        masked_bce(torch.tensor([[-99.0, -5.0]]), y, torch.tensor([[0.0, 1.0]]), 1))


@pytest.mark.slow
def test_bad_data_is_reported_clearly(tmp_path, capsys):
    assert run(["--data", COCO, "--ann", tmp_path / "missing.json", "--output", tmp_path / "o"]) == 2
    assert "annotation file not found" in capsys.readouterr().err

    data = json.loads((COCO / "annotations.json").read_text())
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    for img in data["images"][:12]:
        shutil.copy(COCO / img["file_name"], root / img["file_name"])
    (root / data["images"][0]["file_name"]).write_bytes(b"not a jpeg")
    raw = (COCO / data["images"][1]["file_name"]).read_bytes()
    (root / data["images"][1]["file_name"]).write_bytes(raw[: len(raw) // 3])  # truncated
    data["categories"].append({"id": 44, "name": "bottle", "isthing": 1})
    data["annotations"].append({"id": 99999, "image_id": data["images"][3]["id"], "category_id": 44})
    data["images"] = data["images"][:12]
    (root / "ann.json").write_text(json.dumps(data))
    assert run(["--data", root, "--ann", root / "ann.json", "--epochs", 1, "--output", tmp_path / "o",
                "--cache-dir", tmp_path / "c", "-j", 0, "--val-split", 0.25]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 images that cannot be used" in out
    assert data["images"][0]["file_name"].split("/")[1] in out
    assert "ignored 1 categories not in the vocabulary (1 image labels): bottle" in out

    empty = dict(data, annotations=[], categories=[c for c in data["categories"] if c["name"] == "bottle"])
    (root / "empty.json").write_text(json.dumps(empty))
    assert run(["--data", root, "--ann", root / "empty.json", "--output", tmp_path / "o"]) == 2
    assert "no positive label of the vocabulary" in capsys.readouterr().err
    assert run(["--data", tmp_path, "--ann", root / "ann.json", "--output", tmp_path / "o"]) == 2
    assert "no usable image" in capsys.readouterr().err
    assert run(["--arch", "resnet18", "--output", tmp_path / "o", "--ann", root / "ann.json", "--data", root]) == 2
    assert "--pretrained PATH" in capsys.readouterr().err


def test_feature_cache_recomputes_only_what_changed(tmp_path):
    from model.network import build_model
    from tagger.presets import default_preprocessing, eval_transform
    from training.datasets import LabelledImages
    from training.features import cached_features

    data = json.loads((COCO / "annotations.json").read_text())
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    data["images"] = data["images"][:4]
    for img in data["images"]:
        shutil.copy(COCO / img["file_name"], root / img["file_name"])
    (root / "a.json").write_text(json.dumps(data))
    pre = {**default_preprocessing("resnet18"), "resize": 72, "crop": 64}
    torch.manual_seed(0)
    model = build_model("resnet18", 34).eval()
    ds, _ = LabelledImages.from_coco([(root, root / "a.json")], label_names(), transform=eval_transform(pre))
    f1, s1 = cached_features(model, ds, pre, tmp_path / "c")
    f2, s2 = cached_features(model, ds, pre, tmp_path / "c")
    assert (s1["computed"], s2["computed"], s2["cached"]) == (4, 0, 4)
    assert torch.equal(f1, f2)
    shutil.copy(COCO / "images" / sorted(p.name for p in (COCO / "images").iterdir())[50],
                root / data["images"][0]["file_name"])  # a photo's bytes change
    f3, s3 = cached_features(model, ds, pre, tmp_path / "c")
    assert s3["computed"] == 1
    assert not torch.equal(f3[0], f1[0])
    assert torch.equal(f3[1:], f1[1:])
    _, s4 = cached_features(model, ds, {**pre, "crop": 56}, tmp_path / "c")  # preprocessing changes
    assert s4["computed"] == 4
    with torch.no_grad():
        model.backbone.conv1.weight.add_(0.01)  # weights change
    _, s5 = cached_features(model, ds, pre, tmp_path / "c")
    assert s5["computed"] == 4


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, cache_dir, tiny_coco):
    """torchrun with 2 CPU processes (gloo, DistributedDataParallel) gives the single-process result."""
    common = ["--ann", str(tiny_coco), "--data", str(COCO), "--cache-dir", str(cache_dir), "--epochs", "3", "-b",
              "8", "-j", "0", "--lr", "0.05"]
    assert run([*common, "--output", tmp_path / "one"]) == 0
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "training", *common,
                        "--output", str(tmp_path / "two")], cwd=REPO, capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one = torch.load(tmp_path / "one/last.pt", weights_only=True)
    two = torch.load(tmp_path / "two/last.pt", weights_only=True)
    torch.testing.assert_close(two["model"]["head.weight"], one["model"]["head.weight"], rtol=1e-4, atol=1e-5)
    assert [h["loss"] for h in two["history"]] == pytest.approx([h["loss"] for h in one["history"]], rel=1e-4)
    assert [h["mAP"] for h in two["history"]] == pytest.approx([h["mAP"] for h in one["history"]], abs=1e-4)
    assert r.stdout.count("epoch 3/3") == 1  # only rank 0 speaks


@pytest.mark.slow
def test_cv_never_lets_a_photos_own_label_reach_its_out_of_fold_prediction():
    """Flip one photo's labels: its out-of-fold predictions (every repeat) must not move."""
    from model.network import build_model
    from training.folds import fold_indices
    from training.head import set_prior_structure
    from training.prior_recipe import cross_validate

    for train, test in fold_indices(40, 4, 0):
        assert not set(train.tolist()) & set(test.tolist())
        assert len(train) + len(test) == 40
    torch.manual_seed(0)
    model = build_model("resnet18", 34, imagenet_prior=True).eval()
    set_prior_structure(model.prior, load_labels())  # the supercategory back-off reads other labels
    features = torch.randn(40, 512).abs()
    targets = (torch.rand(40, 34) < 0.3).float()
    known = torch.ones(40, 34, dtype=torch.bool)
    kw = dict(folds=4, repeats=2, wd=1e-2, pseudo_count=10.0)
    before = cross_validate(model, features, targets, known, **kw)
    flipped = targets.clone()
    flipped[7] = 1 - flipped[7]
    after = cross_validate(model, features, flipped, known, **kw)
    for kind in ("blend", "head_only", "prior_only", "label_frequency"):
        for b, a in zip(before[kind], after[kind]):
            torch.testing.assert_close(a[7], b[7])  # photo 7's own prediction ignores its labels
            if kind != "prior_only":  # (the zero-shot prior uses no label at all)
                assert not torch.allclose(a, b)  # while the other photos' predictions do depend on them


def test_supercategory_back_off_and_checkpoints_made_before_it():
    """A label without ImageNet classes leans on its supercategory siblings; older state dicts still load."""
    from model.network import build_model
    from training.head import fit_head, set_prior_structure, sibling_matrix

    labels = load_labels()
    names = label_names(labels)
    siblings = sibling_matrix(labels)
    leaves = names.index("leaves")
    plants = {n for n, lab in zip(names, labels) if lab["supercategory"] == "plant" and n != "leaves"}
    assert {names[j] for j in siblings[leaves].nonzero().flatten().tolist()} == plants
    torch.testing.assert_close(siblings.sum(1)[siblings.sum(1) > 0], torch.ones(int((siblings.sum(1) > 0).sum())))
    assert siblings[names.index("person")].sum() == 0  # alone in its supercategory
    torch.manual_seed(0)
    model = build_model("resnet18", len(names), imagenet_prior=True).eval()
    set_prior_structure(model.prior, labels)
    features = torch.randn(60, 512).abs()
    targets = (torch.rand(60, len(names)) < 0.3).float()
    known = torch.ones(60, len(names), dtype=torch.bool)
    fit_head(model, features, targets, known)
    w = model.prior.sibling_weight
    assert w[leaves] < 1
    assert w[names.index("car")] == 1  # car has ImageNet classes: no back-off
    # a state dict from before the back-off existed loads strictly and means "no back-off"
    old = {k: v for k, v in model.state_dict().items() if "sibling" not in k}
    fresh = build_model("resnet18", len(names), imagenet_prior=True).eval()
    fresh.load_state_dict(old, strict=True)
    assert bool((fresh.prior.sibling_weight == 1).all())
    blended = model.prior.imagenet_blend(model.head(features), model.backbone.get_classifier()(features))
    torch.testing.assert_close(fresh.logits_from_features(features), blended)
