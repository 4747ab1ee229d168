"""EXIF against ExifTool's ground truth for 29 real camera files (samples/exif/expected.json), and hostile EXIF
made by code: nothing hangs, nothing crashes, garbage gives None."""
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from gateway.place import gps_information
from photo_store import open_store
from serving.reparse import reparse_exif
from tagger import exif
from tagger.exif import EMPTY, heif_extents_read_nothing, jpeg_exif_block, parse_exif
from tagger.exif_parsers import ExifParsers, needs_reparse, read_exif, reparsed
from tests.conftest import EXIF, REPO
from tests.helpers import alive, wait_until
from tests.slow_exif import hanging_jpeg

FILES = sorted(json.loads((EXIF / "expected.json").read_text())["files"])


@pytest.mark.parametrize("name", FILES)
def test_matches_exiftool(name, exif_expected):
    expected = exif_expected[name]
    tool = expected["exiftool"]
    got = read_exif((EXIF / name).read_bytes())
    assert got["datetime_original"] == expected["datetime_original"]
    # data_information: DateTimeOriginal, else DateTimeDigitized (ExifTool's CreateDate), else DateTime (ModifyDate)
    for key, source in (("ExifIFD:DateTimeOriginal", "DateTimeOriginal"), ("ExifIFD:CreateDate", "DateTimeDigitized"),
                        ("IFD0:ModifyDate", "DateTime")):
        if tool.get(key) and not str(tool[key]).startswith("0000"):
            assert (got["datetime"], got["date_source"]) == (tool[key], source)
            break
    else:
        assert got["datetime"] is None
        assert got["date_source"] is None
    if expected.get("make") or expected.get("model"):
        assert got["camera"]["make"] == expected["make"]
        assert got["camera"]["model"] == expected["model"]
    if "IFD0:Orientation" in tool:
        assert got["orientation"] == tool["IFD0:Orientation"]
    gps = expected["gps"]
    if gps is None or not gps.get("gps_valid", True):
        assert got["gps"] is None
        return
    assert got["gps"]["latitude"] == pytest.approx(gps["latitude"], abs=1e-7)
    assert got["gps"]["longitude"] == pytest.approx(gps["longitude"], abs=1e-7)
    if gps["altitude"] is None:
        assert got["gps"]["altitude"] is None
    else:
        sign = -1 if got["gps"]["altitude_ref"] == 1 else 1
        assert sign * got["gps"]["altitude"] == pytest.approx(gps["altitude"], abs=1e-3)


def test_original_gps_keys_below_sea_level_and_west():
    info = gps_information(read_exif((EXIF / "GoPro.jpg").read_bytes())["gps"])
    assert set(info) == {"GPSAltitude", "GPSAltitudeRef", "GPSLatitude", "GPSLatitudeRef", "GPSLongitude",
                         "GPSLongitudeRef"}
    assert info["GPSAltitudeRef"] == "1"
    assert float(info["GPSAltitude"]) == pytest.approx(3.983, abs=1e-3)
    assert info["GPSLongitudeRef"] == "W"
    assert info["GPSLongitude"] < 0
    assert isinstance(info["GPSLatitude"], float)
    assert isinstance(info["GPSAltitude"], str)


# ---- hostile EXIF, made here: a little-endian TIFF block inside a JPEG APP1 segment

def _ifd(entries, next_offset=0):
    """entries: (tag, type, count, value_or_offset as 4 raw bytes)."""
    out = struct.pack("<H", len(entries))
    for tag, typ, count, raw in entries:
        out += struct.pack("<HHI", tag, typ, count) + raw
    return out + struct.pack("<I", next_offset)


def _jpeg_with(tiff: bytes) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 90, 90)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def _rational_block(values):
    return b"".join(struct.pack("<II", n, d) for n, d in values)


def hostile_cases():
    head = b"II*\x00" + struct.pack("<I", 8)
    cases = {}
    # IFD0 whose next-IFD offset points back at itself
    cases["ifd_cycle"] = head + _ifd([(0x010F, 2, 4, b"Cam\x00")], next_offset=8)
    # an entry claiming 4 billion SHORT values
    cases["huge_count"] = head + _ifd([(0x0112, 3, 0xFFFFFFFF, struct.pack("<I", 40))])
    # an Exif IFD with a MakerNote of enormous count
    exif_ifd_at = 8 + 2 + 12 + 4
    cases["makernote_huge_count"] = head + _ifd([(0x8769, 4, 1, struct.pack("<I", exif_ifd_at))]) + _ifd(
        [(0x927C, 7, 0xFFFFFF00, struct.pack("<I", 60))])
    # truncated header
    cases["truncated_header"] = b"II*\x00\xff"
    # GPS with 0/0 rationals, and GPS out of range
    for name, lat in (("gps_zero_over_zero", [(0, 0), (0, 0), (0, 0)]),
                      ("gps_out_of_range", [(200, 1), (0, 1), (0, 1)])):
        gps_at = 8 + 2 + 12 + 4
        data_at = gps_at + 2 + 2 * 12 + 4
        gps = _ifd([(0x0002, 5, 3, struct.pack("<I", data_at)), (0x0004, 5, 3, struct.pack("<I", data_at + 24))])
        cases[name] = head + _ifd([(0x8825, 4, 1, struct.pack("<I", gps_at))]) + gps + \
            _rational_block(lat) + _rational_block([(10, 1), (0, 1), (0, 1)])
    cases["random_bytes"] = bytes(range(256)) * 8
    return cases


@pytest.mark.parametrize("name, tiff", sorted(hostile_cases().items()))
def test_hostile_exif_gives_none_quickly_and_never_raises(name, tiff):
    got = read_exif(_jpeg_with(tiff), timeout=3.0)  # killed after 3 s of parsing at most: it returns
    assert got["gps"] is None
    assert got["datetime"] is None
    assert read_exif((EXIF / "DSCN0010.jpg").read_bytes())["gps"] is not None  # the next photo reads fine


def test_a_parse_that_overruns_is_killed_and_only_it():
    """Four GPS photos parsed beside one that hangs all keep their GPS: each parse has its own process and its own
    time from its own start; the overrunning one alone is killed, and says so (``unread``)."""
    parsers = ExifParsers(timeout=4.0, parse="tests.slow_exif:parse")
    gps_photo = (EXIF / "DSCN0010.jpg").read_bytes()
    try:
        with ThreadPoolExecutor(5) as pool:
            hanging = pool.submit(parsers.read, hanging_jpeg())
            wait_until(lambda: len(parsers.processes()) == 1, what="the hanging parse to start")
            before = set(parsers.processes())
            results = list(pool.map(lambda _: parsers.read(gps_photo), range(4)))
            got = hanging.result()
        assert all(r["gps"] is not None and "unread" not in r for r in results)
        assert got["gps"] is None
        assert "longer than 4 s" in got["unread"]
        assert {k: v for k, v in got.items() if k != "unread"} == EMPTY
        assert not any(alive(pid) for pid in before)  # killed and reaped
        assert parsers.read(gps_photo)["datetime"] == "2008:10:22 16:28:39"  # a fresh process answers
    finally:
        parsers.close()


def test_a_parser_that_dies_mid_parse_says_so_and_is_replaced():
    parsers = ExifParsers(timeout=60.0, parse="tests.slow_exif:parse")
    try:
        with ThreadPoolExecutor(1) as pool:
            hanging = pool.submit(parsers.read, hanging_jpeg())
            pid = wait_until(lambda: parsers.processes(), what="the parse to start")[0]
            os.kill(pid, signal.SIGKILL)
            assert "died" in hanging.result()["unread"]
        assert parsers.read((EXIF / "DSCN0010.jpg").read_bytes())["gps"] is not None
    finally:
        parsers.close()


def test_unread_exif_is_parsed_again_a_few_times_at_most():
    unread = {**EMPTY, "unread": "EXIF parsing took longer than 3 s"}
    assert needs_reparse(unread)
    assert not needs_reparse(EMPTY)
    second = reparsed(unread, unread)
    assert second["attempts"] == 2
    assert needs_reparse(second)
    assert not needs_reparse(reparsed(second, unread))  # the third failure: unreadable for good
    assert reparsed(second, EMPTY) == EMPTY  # read at last


def test_parsers_die_with_the_process_that_started_them(tmp_path):
    """A SIGKILLed server (the OOM killer, the chaos tests) leaves no parser behind: neither an idle one, nor one
    busy on a parse that would never end."""
    script = (
        "import sys, threading, time\n"
        "from tagger.exif_parsers import ExifParsers\n"
        "from tests.slow_exif import hanging_jpeg\n"
        "p = ExifParsers(timeout=3600, parse='tests.slow_exif:parse')\n"
        "threading.Thread(target=p.read, args=(hanging_jpeg(),), daemon=True).start()\n"
        "while len(p.processes()) < 1: time.sleep(0.05)\n"
        "p.read(open(sys.argv[1], 'rb').read())\n"  # a second parser, idle after this
        "assert len(p.processes()) == 2\n"
        "print(*p.processes(), flush=True)\n"
        "time.sleep(3600)\n")
    server = subprocess.Popen([sys.executable, "-c", script, str(EXIF / "DSCN0010.jpg")], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in server.stdout.readline().split()]
        assert len(pids) == 2
        assert all(alive(p) for p in pids)
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    wait_until(lambda: not any(alive(p) for p in pids), what="the parsers to die with their parent")


def test_a_heif_whose_extents_are_zero_bytes_wide_is_not_handed_to_exifread(monkeypatch):
    """A fuzzer's finding: exifread walks every extent such an ``iloc`` box declares, reading nothing per extent."""
    finding = (REPO / "tests/fuzz_findings/heif-iloc-extents-of-no-bytes-2026-12-08.bin").read_bytes()
    assert heif_extents_read_nothing(finding)
    asked = []
    monkeypatch.setattr(exif.exifread, "process_file", lambda *a, **k: asked.append(a) or {})
    assert parse_exif(finding) == EMPTY
    assert not asked
    real = sorted(EXIF.glob("*.heic")) + sorted(EXIF.glob("*.HEIC"))
    assert all(not heif_extents_read_nothing(p.read_bytes()) for p in real)


def test_garbage_never_raises():
    assert read_exif(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*garbage") == EMPTY


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_webp_and_png_exif_read_like_the_jpeg(fmt):
    jpeg = (EXIF / "DSCN0010.jpg").read_bytes()
    block = jpeg_exif_block(jpeg)
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(buf, fmt, exif=b"Exif\x00\x00" + block)
    got, want = read_exif(buf.getvalue()), read_exif(jpeg)
    assert got["datetime"] == want["datetime"] == "2008:10:22 16:28:39"
    assert got["gps"] == pytest.approx(want["gps"])
    assert got["camera"] == want["camera"]


def test_the_parser_process_holds_none_of_the_callers_sockets():
    """A parser inheriting a gunicorn worker's client connections would keep a closed keep-alive connection open,
    so a browser reusing it would hang; each parser is a fresh interpreter holding only its two pipes."""
    parsers = ExifParsers()
    a, b = socket.socketpair()
    try:
        parsers.read((EXIF / "DSCN0010.jpg").read_bytes())
        children = parsers.processes()
        assert children
        for pid in children:
            held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            assert not [h for h in held if h.startswith("socket:")], held
    finally:
        a.close()
        b.close()
        parsers.close()


def test_make_reparse_exif_reads_what_an_overrun_left_unread(tmp_path):
    """``make reparse-exif`` (serving.reparse) reaches the photos nobody asks /imginfo for."""
    store = open_store(tmp_path)
    photo = (EXIF / "DSCN0010.jpg").read_bytes()
    unread = {**EMPTY, "unread": "EXIF parsing took longer than 3 s"}
    store.put("tuscany", photo, exif=unread, fmt="JPEG", width=640, height=480)
    store.put("hangs", hanging_jpeg(), exif=unread, fmt="JPEG", width=64, height=48)
    store.put("fine", photo, exif=EMPTY, fmt="JPEG", width=640, height=480)
    assert [r["id_name"] for r in store.unread_exif()] == ["tuscany", "hangs"]
    parsers = ExifParsers(timeout=3.0, parse="tests.slow_exif:parse")
    try:
        assert reparse_exif(store, parsers) == {"read": 1, "unread": ["hangs"]}
    finally:
        parsers.close()
    assert store.get("tuscany")["exif"]["gps"]["latitude"] == pytest.approx(43.46744833)
    assert store.get("hangs")["exif"]["attempts"] == 2
    assert store.get("fine")["exif"] == EMPTY
    assert not store.set_exif("tuscany", "0" * 64, EMPTY)  # only onto the bytes it was parsed from
