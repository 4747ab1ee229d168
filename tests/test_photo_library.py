"""The photo library: a folder tagged into XMP sidecars through the real gateway and TorchServe, read back with
the ExifTool command line; keywords imported as training labels; export; errors."""
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest
import requests

from photo_library.cli import main
from photo_library.files import id_name, photos_in, sidecar_path
from photo_library.gateway_client import GatewayClient, GatewayDown
from photo_library.keywords import load_synonyms, user_keywords
from photo_library.xmp import (
    HIERARCHICAL,
    MODEL_VERSION,
    SUBJECT,
    TAGGER_SUBJECTS,
    TAGS_LIST,
    ExifTools,
    XmpError,
    merge_tags,
    read_sidecar,
    sidecar_changes,
    write_sidecar,
)
from photo_store import open_store
from serving.torchserve import free_ports
from tagger.labels import load_labels
from tests.conftest import COCO, EXIF, secured_gateway, served_stack
from tests.helpers import EXIFTOOL, exiftool, wait_until


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ without a server

def test_the_tagger_replaces_only_its_own_entries():
    current = {SUBJECT: ["Holiday", "sea", "boat"], HIERARCHICAL: ["Places|Tuscany", "Tagger|boat"],
               TAGS_LIST: ["Places/Tuscany", "Tagger/boat"], TAGGER_SUBJECTS: ["boat"]}
    new = merge_tags(current, ["sea", "tree"], "Tagger", version="1.1", sha256="ab")
    # "sea" was the user's already: kept, and never recorded as the tagger's; "boat" was the tagger's: gone
    assert new[SUBJECT] == ["Holiday", "sea", "tree"]
    assert new[TAGGER_SUBJECTS] == ["tree"]
    assert new[HIERARCHICAL] == ["Places|Tuscany", "Tagger|sea", "Tagger|tree"]
    assert new[TAGS_LIST] == ["Places/Tuscany", "Tagger/sea", "Tagger/tree"]
    assert new[MODEL_VERSION] == "1.1"
    assert user_keywords({**new, "IPTC:Keywords": ["ocean"]}, "Tagger") == ["Holiday", "sea", "ocean"]


def test_names_and_synonyms(tmp_path, labels):
    root = tmp_path / "Pictures"
    (root / "a" / ".hidden").mkdir(parents=True)
    for name in ("a/IMG_1.JPG", "a/b.heic", "a/notes.txt", "a/.c.jpg", "a/.hidden/d.jpg", "a/IMG_1.JPG.xmp"):
        (root / name).write_bytes(b"x")
    assert [p.relative_to(root).as_posix() for p in photos_in(root)] == ["a/IMG_1.JPG", "a/b.heic"]
    photo = root / "a/IMG_1.JPG"
    assert sidecar_path(photo).name == "IMG_1.JPG.xmp"
    assert sidecar_path(photo, "stem").name == "IMG_1.xmp"
    assert id_name(root, photo) == "Pictures/a/IMG_1.JPG"
    assert id_name(root, root / ("x" * 300 + ".jpg")).startswith("Pictures/sha256-")
    m = tmp_path / "map.json"
    m.write_text('{"Ocean": "SEA"}')
    assert load_synonyms(m, labels) == {"ocean": "sea"}
    m.write_text('{"beach": "sand"}')
    with pytest.raises(ValueError, match="'sand' name no label"):
        load_synonyms(m, labels)


def hostile_sidecar(path, payload: str) -> None:
    """A sidecar as another program (or a person) on a shared folder could leave it: a user keyword and a tagger
    entry that each hold ``payload``, line breaks included (XML character references)."""
    esc = payload.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "&#10;")
    path.write_text(f"""<?xpacket begin='' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>
 <rdf:Description rdf:about='' xmlns:dc='http://purl.org/dc/elements/1.1/'
   xmlns:lr='http://ns.adobe.com/lightroom/1.0/' xmlns:phototagger='http://ns.photo-tagger.invalid/1.0/'>
  <dc:subject><rdf:Bag><rdf:li>Holiday {esc}</rdf:li><rdf:li>boat {esc}</rdf:li></rdf:Bag></dc:subject>
  <lr:hierarchicalSubject><rdf:Bag><rdf:li>Tagger|boat {esc}</rdf:li></rdf:Bag></lr:hierarchicalSubject>
  <phototagger:Subjects><rdf:Bag><rdf:li>boat {esc}</rdf:li></rdf:Bag></phototagger:Subjects>
 </rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end='w'?>""")


def test_a_keyword_holding_exiftool_arguments_runs_nothing_and_stays_byte_for_byte(tmp_path):
    """PyExifTool sends one argument a line: a keyword read from a shared folder's sidecar holding
    ``\\n-if\\n<perl>`` ran that Perl when the sidecar was rewritten. The user's entries are never re-sent now,
    and the tagger's old entry that holds a line break is left alone rather than named."""
    pwned = tmp_path / "PWNED"
    payload = f"x\n-if\nsystem('touch {pwned}') || 1\n-XMP-dc:Title=pwned"
    side = tmp_path / "a.jpg.xmp"
    hostile_sidecar(side, payload)
    with ExifTools() as tools, tools.use() as tool:
        current = read_sidecar(tool, side)
        assert current[SUBJECT] == [f"Holiday {payload}", f"boat {payload}"]  # read back as written
        args = sidecar_changes(current, ["sea"], "Tagger", version="1.1", sha256="ab")
        assert all("\n" not in a for a in args)
        write_sidecar(tool, side, args)
        after = read_sidecar(tool, side)
        with pytest.raises(XmpError, match="line break"):
            write_sidecar(tool, side, [f"-XMP-dc:Subject+={payload}"])
    assert not pwned.exists()
    assert after[SUBJECT][:2] == [f"Holiday {payload}", f"boat {payload}"]
    assert "sea" in after[SUBJECT]
    assert f"Tagger|boat {payload}" in after[HIERARCHICAL]
    assert "Tagger|sea" in after[HIERARCHICAL]
    assert after[TAGGER_SUBJECTS] == ["sea"]
    assert after[MODEL_VERSION] == "1.1"
    assert "Title" not in json.dumps(exiftool(side, "XMP-dc:Title"))


def test_a_file_name_holding_a_line_break_is_skipped_and_nothing_is_written(tmp_path, labels, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ExifTool's working folder: where the payload would write (a name has no "/")
    root = tmp_path / "Pictures"
    root.mkdir()
    evil = root / "a\n-if\nsystem('touch PWNED') || 1\n.jpg"
    shutil.copy(COCO / "images/000000000471.jpg", evil)
    assert main(["import", str(root), "--output", str(tmp_path / "k.json")]) == 1
    assert "line break" in capsys.readouterr().err
    assert not (tmp_path / "PWNED").exists()
    from photo_library.tagging import tag_one  # the tag command's step for one photo, before any upload

    status, reason = tag_one(evil, root, client=None, tools=None, version="1", naming="ext", parent="Tagger",
                             dry_run=False)
    assert status == "failed"
    assert "line break" in reason
    assert not any(p.suffix == ".xmp" for p in root.iterdir())


def test_import_new_labels_turns_a_librarys_own_keywords_into_labels(tmp_path, capsys, labels):
    """--new-labels: keywords on at least 5 photos become labels (with the evidence found for each, written beside
    the COCO file as the labels file to train with); the training tool reads both back as they were meant."""
    from training.datasets import LabelledImages, pair_sources

    root = tmp_path / "Family"
    root.mkdir()
    photos = sorted((COCO.parent / "coco_more/images").glob("*.jpg"))[:8]  # none holds keywords of its own
    keywords = [["Dog", "Mia"], ["dog", "Mia"], ["DOG"], ["dog", "Mia"], ["dog", "Mia", "rare"], ["Mia", "sea"],
                ["a|b"], []]
    for i, (photo, words) in enumerate(zip(photos, keywords)):
        shutil.copy(photo, root / f"p{i}.jpg")
        if words:
            subprocess.run([EXIFTOOL, "-q", *[f"-XMP-dc:Subject={w}" for w in words], "-o",
                            str(root / f"p{i}.jpg.xmp"), str(root / f"p{i}.jpg")], check=True)
    for i in range(5):  # a keyword a label cannot be, on 5 photos: refused, not a label
        subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-dc:Subject+=a|b", str(root / f"p{i}.jpg.xmp")],
                       check=True)
    out = tmp_path / "keywords.json"
    assert main(["import", str(root), "--output", str(out), "--new-labels"]) == 0
    printed, errors = capsys.readouterr()
    assert "dog (5 photos): the detector knows it" in printed
    assert "Mia (5 photos): learns from its photos alone" in printed
    assert "rare" not in printed.split("keywords")[1]
    assert "not a label: 'a|b'" in errors
    vocabulary = load_labels(tmp_path / "keywords.labels.json")
    assert [lab["name"] for lab in vocabulary] == [lab["name"] for lab in labels] + ["dog", "Mia"]
    assert "--labels " + str(tmp_path / "keywords.labels.json") in printed
    names = [lab["name"] for lab in vocabulary]
    ds, report = LabelledImages.from_coco(pair_sources([str(root)], [str(out)]), names)
    targets, known = ds.targets()
    by_photo = {p.name: i for i, p in enumerate(ds.paths)}
    dog, mia, sea = names.index("dog"), names.index("Mia"), names.index("sea")
    assert [int(targets[by_photo[f"p{i}.jpg"], dog]) for i in range(7)] == [1, 1, 1, 1, 1, 0, 0]
    assert bool(known[by_photo["p5.jpg"], dog])
    assert bool(known[by_photo["p6.jpg"], mia])  # keyworded: negatives
    assert "p7.jpg" not in by_photo  # no keyword at all: nothing known
    assert int(targets[:, sea].sum()) == 1
    assert int(known[:, sea].sum()) == 1  # the 34 stay unknown where unnamed


def test_a_gateway_that_is_down_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes((COCO / "images/000000000471.jpg").read_bytes())
    assert main(["tag", str(tmp_path), "--gateway", f"http://127.0.0.1:{free_ports(1)[0]}", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the gateway")
    assert "\n" not in err
    assert not (tmp_path / "a.jpg.xmp").exists()


# ------------------------------------------------------------------------------------------ the real stack

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    yield from served_stack(tmp_path_factory)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A folder like a user's: photos in subfolders, a HEIC, a truncated JPEG, a text file, and a photo with the
    user's own sidecar (their keywords and a title)."""
    root = tmp_path_factory.mktemp("lib") / "Pictures"
    (root / "2024/rome").mkdir(parents=True)
    shutil.copy(COCO / "images/000000000471.jpg", root / "2024/bus.jpg")
    shutil.copy(COCO / "images/000000000382.jpg", root / "2024/rome/street.JPG")
    shutil.copy(EXIF / "DSCN0010.jpg", root / "tuscany.jpg")
    shutil.copy(EXIF / "IMG_5195.HEIC", root / "phone.HEIC")
    data = (COCO / "images/000000000009.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(data[: len(data) // 3])
    (root / "notes.txt").write_text("not a photo")
    subprocess.run([EXIFTOOL, "-q", "-XMP-dc:Subject=Holiday", "-XMP-dc:Subject=ocean",
                    "-XMP-lr:HierarchicalSubject=Places|Tuscany", "-XMP-dc:Title=Ponte", "-o",
                    str(root / "tuscany.jpg.xmp"), str(root / "tuscany.jpg")], check=True)
    return root


def test_tag_writes_the_served_tags_into_sidecars_and_keeps_everything_else(stack, library, capsys):
    originals = {p: sha(p) for p in photos_in(library)}
    code = main(["tag", str(library), "--gateway", stack.gateway_url, "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1  # broken.jpg failed, and the run went on
    assert "tagged 4, skipped 0 (unchanged), failed 1" in out
    assert "broken.jpg" in err
    assert "truncated" in err
    assert not (library / "broken.jpg.xmp").exists()
    assert not (library / "notes.txt.xmp").exists()
    assert {p: sha(p) for p in photos_in(library)} == originals  # originals are only read
    for photo in ("2024/bus.jpg", "2024/rome/street.JPG", "tuscany.jpg", "phone.HEIC"):
        served = requests.get(f"{stack.gateway_url}/imginfo", params={"id_name": f"Pictures/{photo}"},
                              timeout=60).json()
        tags = served["predict_tags"]
        side = exiftool(library / f"{photo}.xmp", SUBJECT, HIERARCHICAL, TAGS_LIST, "XMP-phototagger:ModelVersion",
                        "XMP-phototagger:TagScores")
        assert side.get(HIERARCHICAL, []) == (["Places|Tuscany"] if photo == "tuscany.jpg" else []) + \
            [f"Tagger|{t}" for t in tags]
        assert side.get(TAGS_LIST, []) == [f"Tagger/{t}" for t in tags]
        user = ["Holiday", "ocean"] if photo == "tuscany.jpg" else []
        assert side.get(SUBJECT, []) == user + [t for t in tags if t not in user]
        assert side["XMP-phototagger:ModelVersion"] == [served["model_version"]]
        # every tag's score, in the tagger's own namespace (no photo manager records confidences)
        assert side.get("XMP-phototagger:TagScores", []) == [f"{served['scores'][t]:.4f} {t}" for t in tags]
    assert "bus" in exiftool(library / "2024/bus.jpg.xmp", SUBJECT)[SUBJECT]
    assert exiftool(library / "tuscany.jpg.xmp", "XMP-dc:Title")["XMP-dc:Title"] == ["Ponte"]  # other fields stay


def test_a_second_run_rewrites_nothing(stack, library, capsys):
    sidecars = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in library.rglob("*.xmp")}
    assert main(["tag", str(library), "--gateway", stack.gateway_url, "--no-progress"]) == 1
    assert "tagged 0, skipped 4 (unchanged), failed 1" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in library.rglob("*.xmp")} == sidecars
    assert main(["tag", str(library), "--gateway", stack.gateway_url, "--no-progress", "--dry-run"]) == 0
    out = capsys.readouterr().out  # only the broken photo is left, and a dry run sends nothing
    assert "would tag 1, skipped 4 (unchanged), failed 0" in out
    assert "would tag: " in out
    assert "broken.jpg" in out


def test_lightroom_names_and_a_dry_run(stack, tmp_path, capsys):
    root = tmp_path / "lr"
    root.mkdir()
    shutil.copy(COCO / "images/000000000471.jpg", root / "bus.jpg")
    assert main(["tag", str(root), "--gateway", stack.gateway_url, "--no-progress", "--dry-run"]) == 0
    assert "would tag 1" in capsys.readouterr().out
    assert not list(root.glob("*.xmp"))
    assert main(["tag", str(root), "--gateway", stack.gateway_url, "--no-progress", "--sidecar-name", "stem",
                 "--parent", "Auto"]) == 0
    side = exiftool(root / "bus.xmp", HIERARCHICAL, TAGS_LIST)
    assert "Auto|bus" in side[HIERARCHICAL]
    assert "Auto/bus" in side[TAGS_LIST]
    assert not (root / "bus.jpg.xmp").exists()


def test_tag_under_another_policy_rewrites_the_sidecar_with_its_tags(stack, tmp_path, capsys):
    """--policy complete: the sidecar gets complete's tags and says which policy made them; a run under another
    policy is not skipped as unchanged, and the default run writes the gateway's (precise)."""
    root = tmp_path / "p"
    root.mkdir()
    shutil.copy(COCO / "images/000000000471.jpg", root / "bus.jpg")
    gateway = ["--gateway", stack.gateway_url, "--no-progress"]
    assert main(["tag", str(root), *gateway, "--policy", "complete"]) == 0
    answers = {p: requests.get(f"{stack.gateway_url}/imginfo", params={"id_name": "p/bus.jpg", "policy": p},
                               timeout=60).json()["predict_tags"] for p in ("precise", "complete")}
    assert len(answers["complete"]) > len(answers["precise"])
    side = exiftool(root / "bus.jpg.xmp", HIERARCHICAL, "XMP-phototagger:TagPolicy")
    assert side[HIERARCHICAL] == [f"Tagger|{t}" for t in answers["complete"]]
    assert side["XMP-phototagger:TagPolicy"] == ["complete"]
    assert main(["tag", str(root), *gateway]) == 0
    assert "tagged 1" in capsys.readouterr().out  # the gateway's: precise
    side = exiftool(root / "bus.jpg.xmp", HIERARCHICAL, "XMP-phototagger:TagPolicy")
    assert side[HIERARCHICAL] == [f"Tagger|{t}" for t in answers["precise"]]
    assert side["XMP-phototagger:TagPolicy"] == ["precise"]


def test_import_turns_the_users_keywords_into_labels_and_never_the_taggers(stack, library, tmp_path, labels):
    from training.datasets import LabelledImages, pair_sources

    # a photo with IPTC keywords of its own, tagged by the tagger as well
    shutil.copy(COCO / "images/000000000382.jpg", library / "2024/mine.jpg")
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-IPTC:Keywords=Car", "-IPTC:Keywords=family",
                    str(library / "2024/mine.jpg")], check=True)
    assert main(["tag", str(library), "--gateway", stack.gateway_url, "--no-progress"]) == 1
    synonyms = tmp_path / "map.json"
    synonyms.write_text('{"ocean": "sea"}')
    out = tmp_path / "keywords.json"
    assert main(["import", str(library), "--output", str(out), "--map", str(synonyms)]) == 1  # broken.jpg
    coco = json.loads(out.read_text())
    by_file = {im["file_name"]: im for im in coco["images"]}
    assert set(by_file) == {"tuscany.jpg", "2024/mine.jpg"}  # the others have only the tagger's keywords
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    positives = {by_file_name: [] for by_file_name in by_file}
    for ann in coco["annotations"]:
        name = next(f for f, im in by_file.items() if im["id"] == ann["image_id"])
        positives[name].append(cats[ann["category_id"]])
    assert positives == {"tuscany.jpg": ["sea"], "2024/mine.jpg": ["car"]}
    # every other label is unknown, not negative
    assert len(by_file["tuscany.jpg"]["unknown_category_ids"]) == len(labels) - 1
    ds, report = LabelledImages.from_coco(pair_sources([str(library)], [str(out)]), [lab["name"] for lab in labels])
    assert len(ds) == 2
    assert report["skipped"] == []
    targets, known = ds.targets()
    assert int(known.sum()) == 2
    assert int(targets.sum()) == 2


def test_export_gives_every_photos_tags_and_scores(stack, library, tmp_path):
    out = tmp_path / "tags.csv"
    assert main(["export", str(library), "--gateway", stack.gateway_url, "--output", str(out)]) == 1  # broken
    import csv

    with out.open() as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert "2024/bus.jpg" in rows
    assert "bus" in rows["2024/bus.jpg"]["tags"].split(";")
    assert float(rows["2024/bus.jpg"]["bus"]) > 0.5
    assert "broken.jpg" not in rows
    as_json = tmp_path / "tags.json"
    assert main(["export", str(library), "--gateway", stack.gateway_url, "--format", "json",
                 "--output", str(as_json)]) == 1
    by_path = {r["path"]: r for r in json.loads(as_json.read_text())}
    assert by_path["2024/bus.jpg"]["tags"] == rows["2024/bus.jpg"]["tags"].split(";")
    assert len(by_path["2024/bus.jpg"]["scores"]) == 34


def test_make_tag_on_the_samples(stack, tmp_path):
    """The README's command on a copy of two of the bundled sample folders (142 photos, the odd camera files among
    them; the other 431 are more of the same COCO photos, which the tests above tag already)."""
    for part in ("coco_subset", "exif"):
        shutil.copytree(COCO.parent / part, tmp_path / "samples" / part)
    r = subprocess.run(["make", "-s", "tag", f"DIR={tmp_path / 'samples'}", f"GATEWAY={stack.gateway_url}",
                        "TAG_ARGS=--no-progress"], cwd=COCO.parent.parent, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tagged 142, skipped 0 (unchanged), failed 0" in r.stdout
    assert len(list((tmp_path / "samples").rglob("*.xmp"))) == 142


def test_a_gateway_that_asks_for_a_token_gets_the_one_in_tagger_token(stack, tmp_path, capsys, monkeypatch):
    """Against a gateway with GATEWAY_AUTH=required: no token is one clear line and nothing written; a read token
    the same; TAGGER_TOKEN with a write token tags."""
    store = open_store(stack.var_dir)
    write, read = store.create_token("library", "write")["token"], store.create_token("peek", "read")["token"]
    shutil.copy(COCO / "images/000000000471.jpg", tmp_path / "a.jpg")
    with secured_gateway(stack) as secured:
        args = ["tag", str(tmp_path), "--gateway", secured.gateway_url, "--no-progress"]
        monkeypatch.delenv("TAGGER_TOKEN", raising=False)
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "needs a token" in err
        assert "TAGGER_TOKEN" in err
        assert "\n" not in err
        monkeypatch.setenv("TAGGER_TOKEN", read)
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "read scope" in err
        assert read not in err
        assert not (tmp_path / "a.jpg.xmp").exists()
        monkeypatch.setenv("TAGGER_TOKEN", write)
        assert main(args) == 0
        assert "tagged 1," in capsys.readouterr().out
        assert (tmp_path / "a.jpg.xmp").is_file()


def test_a_503_is_retried_after_its_retry_after():
    answers = [503, 503, 200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            code = answers.pop(0) if answers else 503
            body = b'{"status":"ready","model_version":"7"}' if code == 200 else b'{"error":"busy"}'
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert GatewayClient(url).served_version() == "7"  # after two 503s
        with pytest.raises(GatewayDown, match="answered 503 3 times: busy"):
            GatewayClient(url, retries=2).served_version()
    finally:
        server.shutdown()
        server.server_close()


def test_a_killed_run_costs_only_what_it_had_left(stack, tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    photos = sorted((COCO.parent / "coco_more/images").glob("*.jpg"))[:40]
    for p in photos:
        shutil.copy(p, root / p.name)
    proc = subprocess.Popen([sys.executable, "-m", "photo_library", "tag", str(root), "--gateway", stack.gateway_url,
                             "--no-progress"], cwd=COCO.parent.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_until(lambda: len(list(root.glob("*.jpg.xmp"))) >= 8 or proc.poll() is not None, timeout=120,
               what="8 sidecars written before the kill")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(root.glob("*.jpg.xmp")))
    assert 8 <= done < 40
    r = subprocess.run([sys.executable, "-m", "photo_library", "tag", str(root), "--gateway", stack.gateway_url,
                        "--no-progress"], cwd=COCO.parent.parent, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    tagged = int(r.stdout.split("tagged ")[1].split(",")[0])
    assert tagged == 40 - done
    assert f"skipped {done} (unchanged)" in r.stdout
    assert len(list(root.glob("*.jpg.xmp"))) == 40
    assert not list(root.glob(".*.tmp.xmp"))  # no leftovers
    for side in root.glob("*.jpg.xmp"):
        assert exiftool(side, "XMP-phototagger:SourceSHA256")  # every sidecar whole
