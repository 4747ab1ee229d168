"""The annotation page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright), against the
real TorchServe and gateway started as `make serve` starts them: upload, suggestions, keyboard labelling, reload,
export, retrain, deploy, and the new version answering /imginfo. Then the timings with 1,000 photos in the store.

    .venv/bin/python -m pytest tests/test_annotation_browser.py -s      # -s prints the timings
    TAGGER_SCREENSHOT=docs/annotate.png .venv/bin/python -m pytest tests/test_annotation_browser.py -k loop
"""
from __future__ import annotations

import json
import os
import signal
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from benchmarks.load import synthetic_jpeg
from photo_library.tagging import tag_folder
from photo_store import open_store
from tagger.labels import label_names
from tests.conftest import COCO, REPO, private_model_store, secured_gateway, served_stack
from tests.helpers import alive, children, exiftool, wait_until

CHROMIUM = "/usr/bin/chromium"
HOSTILE = '<img src=x onerror="window.__xss=1">.jpg'
PHOTOS = ["000000000471.jpg", "000000000382.jpg", "000000000009.jpg", "000000000025.jpg", "000000000030.jpg",
          "000000000034.jpg"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # the page's retrain reads the features and detections the default model's build cached, as var/cache holds them
    # for `make serve`
    yield from served_stack(tmp_path_factory, gateway_workers=2, model_store=private_model_store(tmp_path_factory),
                            cache_dir=REPO / "var/cache")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "make setup installs Debian's chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        try:
            yield b
        finally:
            b.close()


def open_page(browser, stack):
    page = browser.new_page(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    dialogs = []  # alerts and the page's own errors: a test ends with none
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: dialogs.append(f"page error: {e}"))
    page.goto(f"{stack.gateway_url}/annotate/")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page, dialogs


def chips(page) -> dict[str, str]:
    return page.eval_on_selector_all("#labels .chip", "cs => Object.fromEntries(cs.map(c => [c.dataset.label, "
                                                      "c.dataset.value]))")


def current(page) -> str:
    return page.text_content("#current")


def wait_shown(page, previous: str | None, timeout=30_000):
    page.wait_for_function("prev => window.__timings.shownId && window.__timings.shownId !== prev",
                           arg=previous, timeout=timeout)
    page.wait_for_selector("#labels .chip")


def test_the_whole_loop_upload_label_reload_export_retrain_deploy(stack, browser, tmp_path):
    page, dialogs = open_page(browser, stack)
    assert page.text_content("#model-version") == "model 1.0"
    files = [{"name": n, "mimeType": "image/jpeg", "buffer": (COCO / "images" / n).read_bytes()} for n in PHOTOS]
    # (bytes of their own: photos with the same bytes share one file, which training then counts once)
    files.append({"name": HOSTILE, "mimeType": "image/jpeg", "buffer": (COCO / "images/000000000036.jpg").read_bytes()})
    files.append({"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"<html>not a photo</html>"})
    page.set_input_files("#files", files)
    page.wait_for_function("n => [...document.querySelectorAll('#uploads li')].filter(li => li.className).length === n",
                           arg=len(files), timeout=60_000)
    rows = page.eval_on_selector_all("#uploads li", "ls => ls.map(l => [l.querySelector('.fname').textContent, "
                                                    "l.className, l.querySelector('.state').textContent])")
    by_name = {name: (cls, text) for name, cls, text in rows}
    assert all(by_name[n][0] == "ok" for n in PHOTOS + [HOSTILE])
    assert by_name["notes.jpg"][0] == "failed"
    assert "not a photo" in by_name["notes.jpg"][1]  # the gateway's 4xx message
    page.wait_for_function("document.querySelectorAll('#grid .tile').length === 7")
    # hostile names are shown as text, never run
    assert HOSTILE in page.eval_on_selector_all("#grid .tile .name", "ns => ns.map(n => n.textContent)")
    assert page.evaluate("window.__xss") is None
    assert not dialogs
    # the first photo opens with the model's suggestions pre-selected and marked
    wait_shown(page, None)
    page.wait_for_function("document.querySelector('#suggest-note').textContent.startsWith('Suggested by model 1.0')")
    values = chips(page)
    assert len(values) == 34
    suggested = page.eval_on_selector_all("#labels .chip.suggested", "cs => cs.map(c => c.dataset.label)")
    assert suggested
    assert all(values[s] == "true" for s in suggested)
    assert page.eval_on_selector_all("#labels .chip .bar .fill", "fs => fs.filter(f => f.style.width).length") == 34
    assert page.get_attribute("#view", "src").startswith("api/view?id_name=")
    # the page suggests under the policy it names (complete by default: it teaches best), and says beside each label
    # how often its tags are right and how many of its photos it finds there; a precise label never tagged says so
    assert page.input_value("#policy") == "complete"
    assert "(complete)" in page.text_content("#suggest-note")
    quality = dict(page.eval_on_selector_all("#labels .chip", "cs => cs.map(c => [c.dataset.label, "
                                                                "c.querySelector('.quality').textContent])"))
    assert quality["person"].startswith("right ")
    assert "finds" in quality["person"]
    page.select_option("#policy", "precise")
    page.wait_for_function("document.querySelector('#suggest-note').textContent.includes('(precise)')")
    quality = dict(page.eval_on_selector_all("#labels .chip", "cs => cs.map(c => [c.dataset.label, "
                                                                "c.querySelector('.quality').textContent])"))
    assert quality["hill"] == "not tagged yet"
    assert quality["person"].startswith("right ")
    page.select_option("#policy", "complete")
    page.wait_for_function("document.querySelector('#suggest-note').textContent.includes('(complete)')")

    # keyboard only: toggle sea (key 1), mark ground-other unknown (Shift+2), undo a toggle (3 then u), Enter
    expected = {}
    for _ in range(5):
        name = current(page)
        before = chips(page)
        page.keyboard.press("Digit1")
        page.keyboard.press("Shift+Digit2")
        page.keyboard.press("Digit3")
        page.keyboard.press("KeyU")
        after = chips(page)
        assert after["sea"] == ("false" if before["sea"] == "true" else "true")
        assert after["ground-other"] == "unknown"
        assert after["platform"] == before["platform"]
        assert page.text_content("#saved-state") == "unsaved changes"
        expected[name] = after
        page.keyboard.press("Enter")
        wait_shown(page, name)
    page.wait_for_function("document.querySelector('#progress-summary').dataset.labelled === '5'", timeout=10_000)
    shown = current(page)
    page.keyboard.press("ArrowLeft")  # back to the last saved one: it shows what was saved
    wait_shown(page, shown)
    assert chips(page) == expected[current(page)]

    # reload: the labels persisted, with who set each and when
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    for name, values in expected.items():
        saved = requests.get(f"{stack.gateway_url}/annotate/api/photo", params={"id_name": name}, timeout=10).json()
        assert sorted(saved["labels"]) == sorted(k for k, v in values.items() if v == "true")
        assert "ground-other" not in saved["label_detail"]  # not reviewed: unknown
        assert {d["source"] for d in saved["label_detail"].values()} <= {"person", "suggestion"}
        assert saved["suggested"]["model_version"] == "1.0"
        assert saved["suggested"]["tag_policy"] == "complete"
    page.select_option("#status", "labelled")
    page.wait_for_function("document.querySelectorAll('#grid .tile').length === 5")
    page.wait_for_selector(".tile.labelled")

    # export through the button: training reads it as it is, unknown labels masked
    with page.expect_download() as download:
        page.click("#export")
    export = json.loads(Path(download.value.path()).read_text())
    assert len(export["images"]) == 5
    ground_other = next(c["id"] for c in export["categories"] if c["name"] == "ground-other")
    assert all(ground_other in im["unknown_category_ids"] for im in export["images"])
    from training.datasets import LabelledImages

    ann = tmp_path / "export.json"
    ann.write_text(json.dumps(export))
    ds, report = LabelledImages.from_coco([(stack.var_dir, ann)], label_names())
    targets, known = ds.targets()
    assert len(ds) == 5
    assert not known[:, label_names().index("ground-other")].any()
    assert known.sum() == 5 * 33

    # retrain for one epoch from the page, see both models on the same validation photos
    page.select_option("#recipe", "sgd")
    page.fill("#epochs", "1")
    page.uncheck("#samples")
    page.click("#train")
    page.wait_for_selector("#job-state.succeeded", timeout=240_000)
    table = page.eval_on_selector_all("#compare tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    assert table[0][0] == "validation photos"
    assert table[0][1] == table[0][2] == "1"
    assert page.text_content("#served-head") == "served (1.0)"
    assert [r[0] for r in table[1:]] == ["mAP", "CF1", "OF1", "CP", "CR"]
    assert table[1][1] != "—"
    assert table[1][2] != "—"  # both models measured
    page.reload()  # a finished job is still shown after a reload
    page.wait_for_selector("#job-state.succeeded")
    page.wait_for_selector("#labels .chip")
    shot = os.environ.get("TAGGER_SCREENSHOT")  # the README's picture: labelled photos, the comparison, deploy
    page.screenshot(path=str(REPO / shot) if shot else str(tmp_path / "annotate.png"), full_page=True)

    # deploy: the page shows the new version, and /imginfo answers with it
    page.click("#deploy")
    page.wait_for_function("document.querySelector('#job-state').textContent.includes('version 1.1 serves now')",
                           timeout=240_000)
    page.wait_for_function("document.querySelector('#model-version').textContent === 'model 1.1'", timeout=30_000)
    r = requests.get(f"{stack.gateway_url}/imginfo", params={"id_name": PHOTOS[0]}, timeout=60)
    assert r.status_code == 200
    assert r.json()["model_version"] == "1.1"
    assert (stack.model_store / "tagger-1.1.mar").is_file()
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1' || document.querySelector('#progress-line.error')")
    assert page.get_attribute("body", "data-ready") == "1", (page.text_content("#progress-line"), dialogs)
    page.wait_for_function("document.querySelector('#suggest-note').textContent.startsWith('Suggested by model 1.1')",
                           timeout=60_000)
    assert page.evaluate("window.__xss") is None
    assert not dialogs
    page.close()


DOGS = ["coco_subset/images/000000000307.jpg", "coco_subset/images/000000000074.jpg",
        "coco_subset/images/000000000490.jpg"]  # a dog in each (samples/coco_ext)
ANOTHER_DOG = "coco_more/images/000000022192.jpg"
NO_DOG = "coco_subset/images/000000000471.jpg"


def press_for(hotkey: str) -> str:
    """The key press a chip's hotkey stands for: "m" -> KeyM, "⌥1" -> Alt+Digit1."""
    ch = hotkey[-1]
    return ("Alt+" if hotkey.startswith("⌥") else "") + (f"Digit{ch}" if ch.isdigit() else f"Key{ch.upper()}")


def test_your_own_label_from_the_page_to_the_tags_and_the_sidecars(stack, browser, tmp_path):
    """Add "dog" (a COCO object: the detector speaks for it) and "cosy" (nothing does) on the page, label photos
    with them by keyboard, retrain on them and the bundled photos, deploy: the new version tags dog in /imginfo, in
    /photos?tag=dog and in a sidecar read back by ExifTool, and scores cosy."""
    page, dialogs = open_page(browser, stack)
    page.fill("#new-label", "dog")
    page.fill("#new-synonyms", "puppy, hound")
    page.click("#add-label")
    page.wait_for_function("document.querySelector('#add-label-result').textContent.startsWith('Added dog')")
    assert "the detector knows" in page.text_content("#add-label-result")
    page.fill("#new-label", "cosy")
    page.click("#add-label")
    page.wait_for_function("document.querySelector('#add-label-result').textContent.startsWith('Added cosy')")
    assert "nothing speaks for it" in page.text_content("#add-label-result")
    page.fill("#new-label", "DOG")  # taken: refused, said why
    page.click("#add-label")
    page.wait_for_function("document.querySelector('#add-label-result').textContent.startsWith('Not added')")
    vocabulary = page.eval_on_selector_all("#vocabulary tbody tr", "rs => rs.map(r => r.dataset.label)")
    assert vocabulary[:2] == ["dog", "cosy"]

    files = [{"name": f"mine-{Path(p).name}", "mimeType": "image/jpeg", "buffer": (REPO / "samples" / p).read_bytes()}
             for p in DOGS + [NO_DOG]]
    page.set_input_files("#files", files)
    page.wait_for_function("n => [...document.querySelectorAll('#uploads li.ok')].length >= n", arg=len(files),
                           timeout=60_000)
    page.select_option("#status", "unlabelled")
    page.wait_for_function("document.querySelectorAll('#grid .tile').length >= 4")
    hotkeys = dict(page.eval_on_selector_all("#labels .chip", "cs => cs.map(c => [c.dataset.label, "
                                                              "c.querySelector('kbd').textContent])"))
    assert hotkeys["cosy"].startswith("⌥")  # past the first 35 labels: the Alt bank
    labelled = {}
    for photo in [f["name"] for f in files]:  # each opened from its tile, labelled by keyboard, saved with Enter
        before = current(page) if page.is_visible("#current") else None
        page.click(f".tile[title='{photo}']")
        if before != photo:
            wait_shown(page, before)
        page.wait_for_function("name => window.__timings.shownId === name", arg=photo)
        values = chips(page)
        dog = photo != f"mine-{Path(NO_DOG).name}"
        if (values["dog"] == "true") != dog:
            page.keyboard.press(press_for(hotkeys["dog"]))
        if values["cosy"] != "true":
            page.keyboard.press(press_for(hotkeys["cosy"]))
        assert chips(page)["cosy"] == "true"
        assert (chips(page)["dog"] == "true") == dog
        labelled[photo] = dog
        page.keyboard.press("Enter")
        page.wait_for_function("name => { const m = document.querySelector('#progress-line').dataset.message || '';"
                               " return m.startsWith('Saved') && m.endsWith(`for ${name}.`); }", arg=photo,
                               timeout=30_000)
    assert len(labelled) == 4
    page.wait_for_function("document.querySelector('#progress-summary').dataset.labelled >= '9'", timeout=10_000)
    for name, dog in labelled.items():
        saved = requests.get(f"{stack.gateway_url}/annotate/api/photo", params={"id_name": name}, timeout=10).json()
        assert ("dog" in saved["labels"]) == dog
        assert "cosy" in saved["labels"]

    page.select_option("#recipe", "prior")
    page.check("#samples")
    shown = page.text_content("#job-state") if page.is_visible("#job-state") else ""
    page.click("#train")
    page.wait_for_function("before => { const s = document.querySelector('#job-state');"
                           " return s.textContent !== before && s.textContent.startsWith('Retrain job')"
                           " && s.className === 'succeeded'; }", arg=shown, timeout=300_000)
    page.click("#deploy")
    page.wait_for_function("document.querySelector('#job-state').textContent.includes('serves now')",
                           timeout=240_000)
    version = requests.get(f"{stack.gateway_url}/readyz", timeout=10).json()["model_version"]
    assert version not in ("1.0", "1.1")

    # an unlabelled dog photo, uploaded now: the served version tags it, and lists it under dog
    another = (REPO / "samples" / ANOTHER_DOG).read_bytes()
    up = requests.post(f"{stack.gateway_url}/imgup", files={"file": ("d.jpg", another)}, data={"id_name": "new-dog"},
                       timeout=60)
    assert up.status_code == 200
    info = requests.get(f"{stack.gateway_url}/imginfo", params={"id_name": "new-dog"}, timeout=60).json()
    assert info["model_version"] == version, info
    assert "dog" in info["predict_tags"], info
    assert "cosy" in info["scores"]  # a label of the served version: scored

    def listed_under_dog():  # its answer is cached a moment after /imginfo has it
        photos = requests.get(f"{stack.gateway_url}/photos", params={"tag": "dog", "limit": 200}, timeout=60).json()
        found = {p["image_id"]: p for p in photos["photos"]}
        return found if "new-dog" in found else None

    by_id = wait_until(listed_under_dog, what="new-dog to be listed under dog")
    assert by_id["new-dog"]["tags_from"] == "model"
    assert {n for n, dog in labelled.items() if dog} <= set(by_id)  # a person's labels, as they saved them
    model = requests.get(f"{stack.gateway_url}/annotate/api/model", timeout=10).json()
    assert {"dog", "cosy"} <= {lab["name"] for lab in model["labels"]}

    folder = tmp_path / "Dogs"
    folder.mkdir()
    (folder / "rex.jpg").write_bytes(another)
    summary = tag_folder(folder, gateway=stack.gateway_url, progress=False)
    assert not summary.failed
    assert len(summary.tagged) == 1
    side = exiftool(folder / "rex.jpg.xmp", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-phototagger:TagScores")
    assert "dog" in side["XMP-dc:Subject"]
    assert "Tagger|dog" in side["XMP-lr:HierarchicalSubject"]
    assert any(s.endswith(" dog") for s in side["XMP-phototagger:TagScores"])
    assert not dialogs
    page.close()


def test_failed_jobs_show_their_error_and_change_nothing_served(stack, browser):
    url = stack.gateway_url
    served = requests.get(f"{url}/annotate/api/model", timeout=10).json()["version"]
    # a cross-site request cannot start a job
    bad = requests.post(f"{url}/annotate/api/jobs/train", json={"recipe": "sgd", "epochs": 1},
                        headers={"Origin": "http://evil.example"}, timeout=10)
    assert bad.status_code == 403
    assert "cross-site" in bad.json()["error"]
    page, _ = open_page(browser, stack)
    # a retrain whose process dies (killed, out of memory) is reported failed, and the next one can start
    page.select_option("#recipe", "sgd")
    page.fill("#epochs", "200")
    page.uncheck("#samples")
    page.click("#train")
    page.wait_for_function("document.querySelector('#job-state').textContent.includes('running (training)')",
                           timeout=60_000)
    job = requests.get(f"{url}/annotate/api/jobs", timeout=10).json()["latest"]
    assert requests.post(f"{url}/annotate/api/jobs/train", json={"recipe": "sgd", "epochs": 1}, timeout=10
                         ).status_code == 409  # one job at a time
    training = wait_until(lambda: children(job["pid"]), timeout=60, what="the job's training process")
    os.kill(job["pid"], signal.SIGKILL)  # the runner alone: its training run goes with it
    wait_until(lambda: not any(alive(p) for p in training), what="the training run to die with its job")
    page.wait_for_selector("#job-state.failed", timeout=30_000)
    assert "ended without a result" in page.text_content("#job-state")
    assert page.is_hidden("#deploy")
    # a retrain cancelled from the page: its training run is killed, the job says so, the next one can start
    page.click("#train")
    page.wait_for_function("document.querySelector('#job-state').textContent.includes('running (training)')",
                           timeout=60_000)
    job = requests.get(f"{url}/annotate/api/jobs", timeout=10).json()["latest"]
    training = wait_until(lambda: children(job["pid"]), timeout=60, what="the job's training process")
    page.click("#cancel-job")
    page.wait_for_selector("#job-state.cancelled", timeout=60_000)
    assert "cancelled from the page" in page.text_content("#job-state")
    assert page.is_hidden("#cancel-job")
    wait_until(lambda: not any(alive(p) for p in training + [job["pid"]]), what="the cancelled job's processes")
    again = requests.post(f"{url}/annotate/api/jobs/{job['id']}/cancel", timeout=10)
    assert again.status_code == 409
    assert "nothing to cancel" in again.json()["error"]
    # a deploy whose checkpoint is gone fails with its reason; the served version stays
    done = next(j for j in requests.get(f"{url}/annotate/api/jobs", timeout=10).json()["jobs"]
                if j["kind"] == "train" and j["state"] == "succeeded")
    Path(done["result"]["checkpoint"]).unlink()
    r = requests.post(f"{url}/annotate/api/jobs/deploy", json={"train_job": done["id"]}, timeout=10)
    assert r.status_code == 202
    page.reload()
    page.wait_for_selector("#job-state.failed", timeout=60_000)
    assert "not found: retrain first" in page.text_content("#job-state")
    assert requests.get(f"{url}/annotate/api/model", timeout=10).json()["version"] == served
    assert requests.get(f"{url}/imginfo", params={"id_name": PHOTOS[0]}, timeout=60).json()["model_version"] == served
    page.close()


def test_the_page_signs_in_with_a_token_when_the_gateway_asks_for_one(stack, browser):
    """A second gateway on the same store and TorchServe with GATEWAY_AUTH=required (what serving a cluster beyond
    loopback sets): the page asks for a token, keeps only an HttpOnly SameSite=Strict cookie, asks again once the
    token is revoked; no log line holds the token."""
    store = open_store(stack.var_dir)
    token = store.create_token("labeller-ann", "write")["token"]
    with secured_gateway(stack) as secured:
        try:
            url = secured.gateway_url
            assert requests.get(f"{url}/annotate/api/labels", timeout=10).status_code == 401
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(f"{url}/annotate/")
            page.wait_for_selector("#sign-in[open]", timeout=30_000)
            assert page.get_attribute("body", "data-ready") is None  # nothing loaded behind the dialog
            page.fill("#token", "tg_00000000_wrong")
            page.click("#sign-in-button")
            page.wait_for_function(
                "document.querySelector('#sign-in-error').textContent.includes('unknown or revoked')")
            page.fill("#token", token)
            page.click("#sign-in-button")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            served = requests.get(f"{stack.gateway_url}/annotate/api/model", timeout=10).json()["version"]
            assert page.text_content("#model-version") == f"model {served}"  # (1.1 once the loop test deployed)
            assert page.is_visible("#sign-out")
            assert "labeller-ann, write" in page.text_content("#signed-in-as")
            cookie, = [c for c in page.context.cookies() if c["name"] == "tagger_session"]
            assert cookie["httpOnly"]
            assert cookie["sameSite"] == "Strict"
            assert cookie["value"] != token
            assert "tagger_session" not in page.evaluate("document.cookie")  # the page's scripts cannot read it
            assert token not in page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
            photo = (COCO / "images" / PHOTOS[1]).read_bytes()
            page.set_input_files("#files", [{"name": "signed-in.jpg", "mimeType": "image/jpeg", "buffer": photo}])
            page.wait_for_function("[...document.querySelectorAll('#uploads li')].some(li => li.className === 'ok')",
                                   timeout=60_000)
            assert store.get("signed-in.jpg") is not None  # uploaded with the session cookie
            # revoked: the next load asks for a token again
            store.revoke_tokens("labeller-ann")
            page.reload()
            page.wait_for_selector("#sign-in[open]", timeout=30_000)
            page.close()
            logs = [p for d in (secured.gateway_dir, stack.gateway_dir) for p in d.glob("*.log")]
            assert logs
            assert not [p for p in logs if token in p.read_text(errors="replace")]
        finally:
            store.delete("signed-in.jpg")


def test_timings_with_1000_photos_in_the_store(stack, browser):
    url = stack.gateway_url

    # 1,000 photos in the store, 100 distinct pictures among them: the page's scale is what is timed, and the
    # prediction cache (per content and version) spares 900 model passes that the suite would only wait for
    def up(i):
        with requests.Session() as s:
            r = s.post(f"{url}/imgup", files={"file": ("p.jpg", synthetic_jpeg(i % 100, (160, 120)), "image/jpeg")},
                       data={"id_name": f"bulk-{i:04d}.jpg"}, timeout=60)
            assert r.status_code == 200, r.text
            assert s.get(f"{url}/imginfo", params={"id_name": f"bulk-{i:04d}.jpg"}, timeout=60).status_code == 200

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(up, range(1000)))
    page, _ = open_page(browser, stack)
    interactive = page.evaluate("window.__timings.interactive")
    assert page.eval_on_selector_all("#grid .tile", "ts => ts.length") == 60
    assert page.text_content("#count") == "1–60 of 1013"  # 1,000, the loop's 7 photos and own-label test's 6, paged
    page.select_option("#order", "uncertain")
    page.select_option("#status", "unlabelled")
    listing = requests.get(f"{url}/annotate/api/photos", params={"order": "uncertain", "status": "unlabelled",
                                                                    "limit": 50, "policy": "complete"},  # the page's
                           timeout=30).json()["photos"]
    # the page opens the listing's first photo (which may be the one it showed already)
    page.wait_for_function("first => window.__timings.shownId === first", arg=listing[0]["id_name"], timeout=30_000)
    page.wait_for_selector("#labels .chip")
    margins = [p["uncertainty"] for p in listing]
    assert margins == sorted(margins)
    assert None not in margins

    def label_steps(n):
        steps = []
        for _ in range(n):
            name = current(page)
            page.evaluate("window.__timings.t0 = performance.now()")
            page.keyboard.press("KeyQ")
            page.keyboard.press("Enter")
            wait_shown(page, name)
            steps.append(page.evaluate("window.__timings.shownAt - window.__timings.t0"))
        return steps

    before = requests.get(f"{url}/annotate/api/progress", timeout=30).json()["labelled"]
    steps = label_steps(15)
    page.evaluate("window.__prefetch = false")  # the baseline, side by side: the next photo fetched on Enter
    label_steps(1)  # the one prefetched before the switch
    cold = label_steps(10)
    try:
        page.wait_for_function("n => Number(document.querySelector('#progress-summary').dataset.labelled) === n",
                               arg=before + 26, timeout=10_000)
    except Exception as exc:  # say what the page says (a save refused, a stale count)
        raise AssertionError(f"{page.text_content('#progress-summary')!r}; last message "
                             f"{page.text_content('#progress-line')!r}") from exc
    page.close()
    figures = {"photos": 1000 + len(PHOTOS) + 1, "interactive_ms": round(interactive, 1),
               "step_ms_median": round(statistics.median(steps), 1), "step_ms_max": round(max(steps), 1),
               "step_ms_median_without_prefetch": round(statistics.median(cold), 1),
               "goal_interactive_ms": 1000, "goal_step_ms": 100}
    print(f"\nannotation page timings: {json.dumps(figures)}")
    (stack.var_dir / "annotation_timings.json").write_text(json.dumps(figures))
