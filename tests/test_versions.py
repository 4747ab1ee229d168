"""Model versions on the real TorchServe: deploy and roll back under load with no failed request; refusals."""
import json
import threading
import time

import pytest
import requests

from annotation_ui.job_runner import deploy_archive
from serving.stack import versions
from serving.versions import DeployError, DeployIncomplete, Versions
from tagger.ts_keys import read_keys
from tests.conftest import COCO, REPO, private_model_store, served_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from training.archive import build_archive

    store = private_model_store(tmp_path_factory)
    ckpt = REPO / "checkpoints/default/best.pt"
    build_archive(ckpt, store / "tagger-9.1.mar", version="9.1")
    build_archive(ckpt, store / "tagger-9.3.mar", version="9.4")  # a file whose content is another version
    (store / "tagger-9.2.mar").write_bytes(b"PK\x03\x04 not really a zip")
    yield from served_stack(tmp_path_factory, gateway_workers=1, model_store=store)


def test_deploy_and_rollback_under_load_lose_no_request(stack):
    url = stack.gateway_url
    with open(COCO / "images/000000000471.jpg", "rb") as f:
        assert requests.post(f"{url}/imgup", files={"file": f}, data={"id_name": "bus"}, timeout=30).ok
    answers, done = [], threading.Event()

    def client():
        with requests.Session() as s:
            while not done.is_set():
                r = s.get(f"{url}/imginfo", params={"id_name": "bus"}, timeout=60)
                answers.append((r.status_code, r.json().get("model_version")))

    t = threading.Thread(target=client)
    t.start()
    try:
        time.sleep(1)
        v = versions(stack)
        assert v.deploy("9.1") == {"default": "9.1", "previous": "1.0"}
        time.sleep(1.5)
        assert v.rollback() == {"default": "1.0", "previous": "9.1"}
        time.sleep(1.5)
    finally:
        done.set()
        t.join(timeout=60)
    assert len(answers) > 20
    assert [s for s, _ in answers if s != 200] == []
    runs = [answers[0][1]]
    for _, version in answers[1:]:
        if version != runs[-1]:
            runs.append(version)
    assert runs == ["1.0", "9.1", "1.0"]  # switched once each way

    listing = {row["version"]: row for row in versions(stack).listing()}
    assert set(listing) == {"1.0", "9.1"}
    assert listing["1.0"]["default"]
    assert listing["9.1"]["workers"] == 1
    state = json.loads((stack.torchserve.run_dir / "deployed.json").read_text())
    assert (state["default"], state["previous"], state["mar"]) == ("1.0", "9.1", "tagger.mar")


@pytest.mark.parametrize("version, message", [
    ("9.1", "already registered"),
    ("7.7", "not found"),
    ("9.2", "not a valid tagger archive"),
    ("9.3", "version '9.4'"),
])
def test_refused_deploys_leave_the_served_version_untouched(stack, version, message):
    v = versions(stack)
    before = (v.default(), sorted(v.registered()))
    with pytest.raises(DeployError, match=message):
        v.deploy(version)
    assert (v.default(), sorted(v.registered())) == before


def test_only_the_local_model_store_can_be_registered(stack):
    keys = read_keys(stack.torchserve.key_file)
    for url in ("http://127.0.0.1:9/evil.mar", "file:///etc/passwd", "../../../etc/passwd"):
        r = requests.post(f"{stack.torchserve.management_url}/models", params={"url": url}, timeout=30,
                          headers={"Authorization": f"Bearer {keys['management']}"})
        assert r.status_code in (400, 404), (url, r.status_code, r.text)
    r = requests.post(f"{stack.torchserve.management_url}/models", params={"url": "tagger-9.1.mar"}, timeout=30)
    assert r.status_code in (400, 401)  # no management key, no registration


@pytest.mark.parametrize("failing, served, kept", [("register", "before", False), ("drain", "new", True),
                                                   ("scale", "new", True)])
def test_a_deploy_failing_half_way_leaves_served_archives_and_record_agreeing(stack, monkeypatch, failing, served,
                                                                             kept):
    """A failure injected before the switch (registering) or after it (draining or scaling down the old version):
    the served default is either the old version with the new archive removed, or the new one with its archive
    kept, and deployed.json names what serves, with an archive on disk for it and for the previous version."""
    from training.archive import build_archive

    run, v = stack.torchserve, versions(stack)
    before = v.default()
    version = {"register": "9.5", "drain": "9.6", "scale": "9.7"}[failing]
    mar = run.model_store / f"tagger-{version}.mar"
    build_archive(REPO / "checkpoints/default/best.pt", mar, version=version)
    real = getattr(Versions, failing)

    def broken(self, *args, **kwargs):
        if failing == "register" or args[0] == before:  # the new version's registration, or the old one's drain
            raise DeployError(f"injected failure in {failing}")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Versions, failing, broken)
    with pytest.raises(DeployIncomplete if kept else DeployError, match="injected"):
        deploy_archive(run, mar, version)
    monkeypatch.undo()

    assert v.default() == (before if served == "before" else version)
    assert mar.is_file() == kept
    recorded = run.run_dir / "deployed.json"  # absent while nothing was deployed since the start
    state = json.loads(recorded.read_text()) if recorded.exists() else {"default": before, "mar": "tagger.mar",
                                                                        "previous": None}
    assert state["default"] == v.default()
    assert (run.model_store / state["mar"]).is_file()
    assert state["previous"] is None or (run.model_store / state["previous_mar"]).is_file()
    r = requests.get(f"{stack.gateway_url}/readyz", timeout=30)
    assert r.status_code == 200
    assert r.json()["model_version"] == v.default()
