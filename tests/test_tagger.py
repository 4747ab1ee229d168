"""The ground floor (tagger/) without a server: the tag rule, the data-folder layout, atomic writes, the archive
reader's errors and the key protocol's parsing."""
import json
import zipfile

import pytest

from tagger.archive import ArchiveError, read_archive
from tagger.layout import DataDir
from tagger.meta import atomic_write, make_meta, save_json, utc_now
from tagger.tags import tags_above
from tagger.ts_keys import read_keys


def test_one_rule_from_scores_to_tags():
    assert tags_above([0.91, 0.10, 0.55, 0.6], ["sea", "car", "boat", "bus"], [0.5, 0.05, 0.6, 0.6]) == \
        ["sea", "bus", "car"]
    assert tags_above([0.2, 0.2], ["a", "b"], [0.1, 0.1]) == ["a", "b"]  # ties keep label order
    with pytest.raises(ValueError, match="2 scores, 3 labels"):
        tags_above([0.1, 0.2], ["a", "b", "c"], [0.5] * 3)


def test_the_layout_is_written_down_once(tmp_path):
    d = DataDir(tmp_path)
    assert d.db == tmp_path / "photos.db"
    assert d.images == tmp_path / "images"
    assert d.key_file == tmp_path / "run/torchserve/key_file.json"
    assert d.deployed.parent == d.torchserve
    assert d.gateway == tmp_path / "run/gateway"
    assert DataDir.of_key_file(d.key_file) == d
    with pytest.raises(ValueError, match="is not <data>/run/torchserve/key_file.json"):
        DataDir.of_key_file(tmp_path / "keys.json")


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path):
    path = tmp_path / "a/meta.json"
    save_json(path, {"v": 1})

    def broken(f):
        f.write(b"half")
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in path.parent.iterdir()] == ["meta.json"]
    atomic_write(path, lambda f: f.write(b"{}"), durable=False)
    assert path.read_text() == "{}"
    assert utc_now().endswith("Z")
    assert len(utc_now()) == 20
    assert len(utc_now(micro=True)) == 27


def test_the_archive_reader_says_what_is_wrong(tmp_path, labels):
    from tagger.presets import default_preprocessing

    with pytest.raises(ArchiveError, match="missing.mar is not a valid tagger archive"):
        read_archive(tmp_path / "missing.mar")
    bad = tmp_path / "bad.mar"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match="rebuild it with `make archive`"):
        read_archive(bad)
    mar = tmp_path / "tagger-2.0.mar"
    meta = make_meta(arch="resnet18", labels=labels, thresholds=[0.5] * len(labels),
                     preprocessing=default_preprocessing("resnet18"), version="2.0")
    with zipfile.ZipFile(mar, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "tagger", "modelVersion": "2.0"}}))
        z.writestr("meta.json", json.dumps({**meta, "thresholds": [0.5]}))
    with pytest.raises(ArchiveError, match="1 thresholds for 34 labels"):
        read_archive(mar)
    with zipfile.ZipFile(mar, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "tagger", "modelVersion": "2.0"}}))
        z.writestr("meta.json", json.dumps(meta))
        z.writestr("model.pt", b"weights")
    a = read_archive(mar)
    assert (a.model_name, a.version, a.code_hash, a.read("model.pt")) == ("tagger", "2.0", None, b"weights")


def test_key_files_old_and_new_forms(tmp_path):
    f = tmp_path / "key_file.json"
    f.write_text(json.dumps({"management": {"key": "m", "expiration time": "x"}, "inference": "i",
                             "API": {"key": "a"}}))
    assert read_keys(f) == {"management": "m", "inference": "i", "API": "a"}
