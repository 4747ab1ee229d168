"""Pages and tag search by index (``photo_store/listing.py``, the tag index of migration 0005), on both backends:
whatever path a query takes, it answers what reading every photo's summary answers (``annotation_ui.labelling.
select``, the rule ``/photos`` states), through uploads, labels, their undo, replaced photos, shared bytes, the
trash and its restore, and a store indexed when it is opened by this code for the first time."""
from __future__ import annotations

import random

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from annotation_ui.labelling import uncertainty
from photo_store import listing, open_store
from photo_store.migrate import _config
from photo_store.postgres import sqlalchemy_url
from tagger.tags import answer_tags
from tests.helpers import select, summaries

TAGS = ["sea", "boat", "road", "bus"]


def _answer(rnd: random.Random, version: str) -> dict:
    precise = sorted(t for t in TAGS if rnd.random() < 0.3)
    balanced = sorted(set(precise) | {t for t in TAGS if rnd.random() < 0.3})
    return {"tags": precise, "policy_tags": {"precise": precise, "balanced": balanced}, "tag_policy": "precise",
            "scores": {t: rnd.random() for t in TAGS}, "model_version": version}


def _fill(store, rnd: random.Random) -> None:
    """60 photos with everything that changes which tags a photo has."""
    for i in range(60):
        data = b"\xff\xd8 listing %d" % (i if i % 9 else 0)  # every ninth holds the first one's bytes
        rec = store.put(f"p{i:02d}", data, exif={}, fmt="JPEG")
        if rnd.random() < 0.8:
            store.save_prediction(rec["sha256"], "1.0", _answer(rnd, "1.0"))
        if rnd.random() < 0.3:
            store.save_prediction(rec["sha256"], "0.9", _answer(rnd, "0.9"))  # another version's: not asked
        if rnd.random() < 0.35:
            store.set_labels(f"p{i:02d}", [t for t in TAGS if rnd.random() < 0.4])  # [] too: labelled, no tag
    for i in rnd.sample(range(60), 12):
        choice = rnd.randrange(4)
        if choice == 0:
            store.clear_labels(f"p{i:02d}")
        elif choice == 1:  # replaced by other bytes: labels go, the new bytes' prediction counts
            rec = store.put(f"p{i:02d}", b"\xff\xd8 replaced %d" % i, exif={}, fmt="JPEG")
            store.save_prediction(rec["sha256"], "1.0", _answer(rnd, "1.0"))
        elif choice == 2:
            store.delete(f"p{i:02d}")
        else:  # a prediction computed again with other tags
            store.save_prediction(store.get(f"p{i:02d}")["sha256"], "1.0", _answer(rnd, "1.0"))
    trashed = store.trash()
    if trashed:
        store.restore(trashed[0]["trash_id"])


def _expected(store, tag: str, policy: str | None) -> list[str]:
    """What reading every photo says: a person's labels on a labelled photo, else the model's tags."""
    return [r["id_name"] for r in summaries(store, "1.0")
            if (tag in r["labels"] if r["labels"] is not None else
                r["answer"] is not None and tag in answer_tags(r["answer"], policy, default="precise")[0])]


def _paged(store, tag: str | None, key: str, limit: int = 7) -> list[str]:
    out, after = [], None
    while True:
        page = store.page(after=after, limit=limit, model_version="1.0", tag=tag, policy=key)
        out += [r["id_name"] for r in page]
        if len(page) < limit:
            return out
        after = (page[-1]["uploaded_at"], page[-1]["id_name"])


@pytest.mark.parametrize("few", [0, 10**6], ids=["walk-newest-first", "from-the-tag-rows"])
def test_pages_and_the_grid_answer_what_every_photos_summary_says(tmp_path, store_url, monkeypatch, few):
    monkeypatch.setattr(listing, "FEW", few)
    with open_store(tmp_path, store_url) as store:
        _fill(store, random.Random(26))
        every = [r["id_name"] for r in summaries(store, "1.0")]
        assert _paged(store, None, "*") == every
        for policy in (None, "balanced"):
            key = store.indexed_policy("1.0", policy, default="precise")
            assert key == (policy or "precise")
            for tag in [*TAGS, "giraffe"]:
                expected = _expected(store, tag, policy)
                assert _paged(store, tag, key) == expected, (tag, policy)
                for status in ("all", "labelled", "unlabelled"):
                    rows = select(summaries(store, "1.0"), status=status, label=tag, policy=policy or "precise")
                    total, page = store.grid("1.0", status=status, tag=tag, policy=key, offset=3, limit=5)
                    assert total == len(rows), (tag, policy, status)
                    assert [r["id_name"] for r in page] == [r["id_name"] for r in rows[3:8]], (tag, policy, status)
        for status in ("all", "labelled", "unlabelled"):
            rows = select(summaries(store, "1.0"), status=status)
            total, page = store.grid("1.0", status=status, offset=10, limit=20)
            assert (total, [r["id_name"] for r in page]) == (len(rows), [r["id_name"] for r in rows[10:30]])
            assert [r["answer"] for r in page] == [r["answer"] for r in rows[10:30]]


def test_the_least_sure_first_as_every_photos_margin_says_and_margins_follow_new_predictions(tmp_path, store_url,
                                                                                           monkeypatch):
    thresholds = {"sea": 0.5, "boat": 0.3, "road": None, "bus": 0.9}

    def margin(answer):
        return uncertainty(answer["scores"], thresholds)

    with open_store(tmp_path, store_url) as store:
        _fill(store, random.Random(7))
        assert store.cache_margins("1.0", "precise", margin, batch=9, seconds=0) == (9, False)  # one batch: time up
        assert store.cache_margins("1.0", "precise", margin, batch=9)[1]  # the rest, several batches
        assert store.cache_margins("1.0", "precise", margin) == (0, True)  # nothing new: nothing computed
        rec = store.put("late", b"\xff\xd8 late", exif={}, fmt="JPEG")
        store.save_prediction(rec["sha256"], "1.0", {**_answer(random.Random(1), "1.0"),
                                                     "scores": {"sea": 0.5001, "boat": 0.1, "road": 0.5, "bus": 0.1}})
        again = store.get("p10")["sha256"]  # a prediction written again drops its margin: computed anew
        store.save_prediction(again, "1.0", {**_answer(random.Random(2), "1.0"), "scores": {t: 0.01 for t in TAGS}})
        assert store.cache_margins("1.0", "precise", margin) == (2, True)
        for few in (0, listing.FEW):  # a tag's photos walked in the margins' order, or sorted whole
            monkeypatch.setattr(listing, "FEW", few)
            for status in ("all", "labelled", "unlabelled"):
                for tag in (None, "sea"):
                    rows = select(summaries(store, "1.0"), status=status, label=tag, order="uncertain",
                                  thresholds=thresholds, policy="precise")
                    for offset in range(0, len(rows) + 7, 7):  # pages within the ranked, across, and after
                        total, page = store.grid("1.0", status=status, tag=tag, policy="precise",
                                                 uncertain="precise", offset=offset, limit=7)
                        assert total == len(rows)
                        assert [r["id_name"] for r in page] == [r["id_name"] for r in rows[offset:offset + 7]], \
                            (status, tag, offset)
        assert store.grid("1.0", uncertain="precise", limit=1)[1][0]["id_name"] == "late"  # 0.5001 against 0.5


def test_answers_from_before_tag_policies_are_found_by_the_tags_they_answered(tmp_path, store_url):
    with open_store(tmp_path, store_url) as store:
        rec = store.put("old", b"\xff\xd8 old", exif={}, fmt="JPEG")
        store.save_prediction(rec["sha256"], "1.0", {"tags": ["sea"], "model_version": "1.0"})
        key = store.indexed_policy("1.0", None, default="precise")
        assert key == "*"
        assert [r["id_name"] for r in store.page(after=None, limit=5, model_version="1.0", tag="sea",
                                                 policy=key)] == ["old"]


def test_a_store_from_before_the_tag_index_is_indexed_when_this_code_opens_it(tmp_path, store_url):
    with open_store(tmp_path, store_url) as store:
        _fill(store, random.Random(3))
    url = sqlalchemy_url(store_url) if store_url else f"sqlite:///{tmp_path}/photos.db"
    engine = create_engine(url)
    with engine.connect() as connection:
        command.downgrade(_config(connection), "0004")  # the schema before this one
        connection.commit()
    with engine.begin() as connection:  # written by the code of then: no index to keep
        connection.execute(text("UPDATE photos SET labels = '[\"bus\"]', labelled_at = 'x' WHERE id_name = 'p05'"))
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
    engine.dispose()
    with open_store(tmp_path, store_url) as store:
        for tag in TAGS:
            assert _paged(store, tag, "precise") == _expected(store, tag, None), tag
        assert "p05" in _paged(store, "bus", "precise")
