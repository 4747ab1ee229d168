"""Your own labels through the API (annotation_ui, photo_store/vocabulary.py, training/evidence.py), on both store
backends: add one and see its evidence, refused names, labelling with it, unknown where a save could not show it,
retiring, and the label file the next model is trained with. The whole loop in a browser is in
test_annotation_browser; the training side in test_training."""
import threading

import pytest

from annotation_ui.blueprint import _model
from annotation_ui.job_routes import _job_config
from tagger.labels import LabelNameError, check_name, load_labels, normalise, words_of
from tests.helpers import IMAGES
from tests.helpers import upload_file as upload
from training.evidence import evidence, suggestions


def labels_of(client) -> dict:
    return {lab["name"]: lab for lab in client.get("/annotate/api/labels").json["labels"]}


def add(client, name, **fields):
    return client.post("/annotate/api/labels", json={"name": name, **fields})


def test_a_coco_object_gets_the_detectors_evidence_and_other_names_theirs():
    assert evidence({"name": "Puppy", "synonyms": ["DOG"]})["detector"] == "dog"
    assert evidence({"name": "mug", "detector_class": "cup"})["source"] == "detector"
    guitar = evidence({"name": "guitar"})
    assert guitar["source"] == "imagenet"
    assert set(guitar["imagenet"].values()) == {"acoustic guitar", "electric guitar"}
    assert evidence({"name": "sky"}) == {"source": "none", "detector": None, "imagenet": {}}
    assert evidence({"name": "cup"})["imagenet"] == {"n03063599": "coffee mug", "n07930864": "cup"}  # not porcupine
    assert evidence({"name": "husky"})["source"] == "none"  # a name is matched whole, never as a substring
    names = {s["name"]: s["source"] for s in suggestions()}
    assert names["dog"] == "detector"
    assert names["guitar"] == "imagenet"
    assert len(names) > 150


@pytest.mark.parametrize("name, why", [("", "empty"), ("   ", "empty"), ("a|b", "separators"), ("x/y", "separators"),
                                       ("a,b", "separators"), ("a;b", "separators"), ("back\\slash", "separators"),
                                       ("x" * 65, "at most 64"), ("tab\there", "control"), (7, "string")])
def test_a_name_a_keyword_cannot_be_is_refused(name, why):
    with pytest.raises(LabelNameError, match=why):
        check_name(name)


def test_a_labels_file_beyond_the_34_is_checked_and_matched_by_synonym():
    labels = normalise(load_labels() + [{"name": "dog", "synonyms": ["Puppy"]}, {"name": "sky", "kind": "scene"}])
    assert [lab["id"] for lab in labels[-2:]] == [1034, 1035]
    assert labels[-2]["isthing"] == 0
    assert words_of(labels)["puppy"] == "dog"
    assert words_of(labels)["sea"] == "sea"
    with pytest.raises(ValueError, match="'SEA' names both 'sea' and 'ocean'"):
        normalise(load_labels() + [{"name": "ocean", "synonyms": ["SEA"]}])


def test_add_a_label_see_its_evidence_and_the_refusals(client):
    r = add(client, "dog", synonyms=["puppy"], labeller="ann")
    assert r.status_code == 201, r.json
    assert r.json["evidence"]["source"] == "detector"
    assert r.json["evidence"]["detector"] == "dog"
    dog = labels_of(client)["dog"]
    assert dog["added"]
    assert not dog["served"]
    assert dog["kind"] == "object"
    assert dog["added_by"] == "ann"
    assert dog["positives"] == 0
    assert dog["sample_positives"] == 31
    assert dog["needs"]["to_be_tagged"] == 0
    sky = add(client, "sky", synonyms=["sky-other", "clouds"]).json  # COCO-Stuff's names: the bundled photos know it
    assert sky["evidence"]["source"] == "none"
    assert labels_of(client)["sky"]["needs"]["to_be_tagged"] == 0
    mia = add(client, "Mia", synonyms=["our cat"]).json
    assert mia["label"]["needs"]["to_be_tagged"] == 3  # nothing speaks for it, no bundled photo shows it
    for name, fields, status in (("DOG", {}, 409), ("hound", {"synonyms": ["Puppy"]}, 409), ("Sea", {}, 409),
                                 ("ocean", {"synonyms": ["sea"]}, 409), ("a|b", {}, 400), ("", {}, 400),
                                 ("ok", {"synonyms": "not a list"}, 400), ("mug", {"detector_class": "teacup"}, 400),
                                 ("thing", {"imagenet": ["n00000000"]}, 400), ("x", {"kind": "animal"}, 400)):
        answer = add(client, name, **fields)
        assert answer.status_code == status, (name, fields, answer.json)
        assert answer.json["error"]
    assert sum(1 for n in labels_of(client) if n.lower() == "dog") == 1
    assert "dog" in {s["name"] for s in client.get("/annotate/api/labels").json["suggestions"]}


def test_labels_added_after_a_save_are_unknown_for_that_photo_never_negatives(client):
    upload(client, IMAGES[0], "before")
    upload(client, IMAGES[1], "after")
    assert client.put("/annotate/api/photos/before/labels", json={"labels": ["sea"]}).status_code == 200
    assert client.put("/annotate/api/photos/before/labels", json={"labels": ["dog"]}).status_code == 400  # not yet
    assert add(client, "dog").status_code == 201
    assert client.put("/annotate/api/photos/after/labels", json={"labels": ["dog", "person"]}).status_code == 200
    export = client.get("/annotate/export.json").json
    dog_id = next(c["id"] for c in export["categories"] if c["name"] == "dog")
    images = {im["id_name"]: im for im in export["images"]}
    assert dog_id in images["before"]["unknown_category_ids"]  # unknown: the save could not show it
    dog_photos = {a["image_id"] for a in export["annotations"] if a["category_id"] == dog_id}
    assert dog_photos == {images["after"]["id"]}
    assert dog_id not in images["after"]["unknown_category_ids"]
    assert labels_of(client)["dog"]["positives"] == 1
    assert client.get("/annotate/api/photos?label=dog").json["photos"][0]["id_name"] == "after"


def test_a_retired_label_leaves_the_next_model_and_what_was_saved_stays(client, app):
    upload(client, IMAGES[0], "a")
    add(client, "dog")
    client.put("/annotate/api/photos/a/labels", json={"labels": ["dog"]})
    r = client.delete("/annotate/api/labels/DOG?labeller=ann")
    assert r.status_code == 200
    assert r.json["label"] == "dog"
    assert client.delete("/annotate/api/labels/dog").status_code == 404  # retired already
    assert "dog" not in labels_of(client)
    assert [x["name"] for x in client.get("/annotate/api/labels").json["retired"]] == ["dog"]
    assert client.put("/annotate/api/photos/a/labels", json={"labels": ["dog"]}).status_code == 400
    export = client.get("/annotate/export.json").json
    dog = next(c for c in export["categories"] if c["name"] == "dog")
    assert dog["retired_at"]
    assert any(a["category_id"] == dog["id"] for a in export["annotations"])
    assert client.delete("/annotate/api/labels/fog").status_code == 200  # a served label can be retired too
    with app.test_request_context():
        config = _job_config(_model())
    assert "fog" not in {lab["name"] for lab in config["vocabulary"]}
    assert len(config["vocabulary"]) == 33
    assert {lab["name"] for lab in config["retired"]} == {"dog", "fog"}
    back = add(client, "dog", synonyms=["hound"])
    assert back.status_code == 200
    assert back.json["brought_back"]
    assert labels_of(client)["dog"]["synonyms"] == ["hound"]
    assert add(client, "fog").status_code == 200
    assert labels_of(client)["fog"]["served"]  # the served label again


def test_two_people_adding_one_name_at_once_get_one_label(client):
    answers = []
    barrier = threading.Barrier(4)

    def adding(i):
        barrier.wait()
        answers.append(add(client, ["Cat", "cat", "CAT ", "kitty"][i], synonyms=["kitty"] if i < 3 else ["cat"]))

    threads = [threading.Thread(target=adding, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409]
    assert [n.lower() for n in labels_of(client) if n.lower() in ("cat", "kitty")] in (["cat"], ["kitty"])


def test_a_label_can_be_used_at_once_in_a_save_and_as_a_filter(client):
    upload(client, IMAGES[0], "a")
    add(client, "table", synonyms=["dining table"])
    saved = client.put("/annotate/api/photos/a/labels", json={"labels": ["table"], "unknown": ["sea"]}).json
    assert saved["labels"] == ["table"]
    assert saved["label_detail"]["table"]["value"] is True
    progress = client.get("/annotate/api/progress").json
    assert progress["per_label"]["table"]["positives"] == 1
