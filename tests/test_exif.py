"""EXIF against ExifTool's ground truth for 29 real camera files (samples/exif/expected.json), and hostile EXIF
made by code: nothing hangs, nothing crashes, garbage gives None."""
import io
import json
import os
import socket
import struct
import time

import pytest
from PIL import Image

from gateway import exif
from gateway.exif import _BOUNDED, EMPTY, gps_information, jpeg_exif_block, read_exif
from tests.conftest import EXIF

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
        assert got["datetime"] is None and got["date_source"] is None
    if expected.get("make") or expected.get("model"):
        assert got["camera"]["make"] == expected["make"] and got["camera"]["model"] == expected["model"]
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
    assert info["GPSAltitudeRef"] == "1" and float(info["GPSAltitude"]) == pytest.approx(3.983, abs=1e-3)
    assert info["GPSLongitudeRef"] == "W" and info["GPSLongitude"] < 0
    assert isinstance(info["GPSLatitude"], float) and isinstance(info["GPSAltitude"], str)


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
    for name, lat in (("gps_zero_over_zero", [(0, 0), (0, 0), (0, 0)]), ("gps_out_of_range", [(200, 1), (0, 1), (0, 1)])):
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
    assert got["gps"] is None and got["datetime"] is None
    assert read_exif((EXIF / "DSCN0010.jpg").read_bytes())["gps"] is not None  # the next photo reads fine


def test_a_parse_that_overruns_is_killed_and_the_parser_replaced():
    data = (EXIF / "DSCN0010.jpg").read_bytes()
    _BOUNDED._get().submit(time.sleep, 5)  # the one parser process is busy: this parse cannot finish in time
    assert read_exif(data, timeout=0.2) == EMPTY  # overran: killed, nothing read
    assert read_exif(data)["datetime"] == "2008:10:22 16:28:39"  # a fresh parser process answers


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
    assert got["gps"] == pytest.approx(want["gps"]) and got["camera"] == want["camera"]


def test_the_parser_process_holds_none_of_the_callers_sockets():
    """A forked parser would inherit a gunicorn worker's client connections and keep a closed keep-alive
    connection open, so a browser reusing it would hang; the parser comes from a fork server instead."""
    exif._BOUNDED.close()
    a, b = socket.socketpair()
    try:
        exif.read_exif((EXIF / sorted(p.name for p in EXIF.glob("*.jpg"))[0]).read_bytes())
        children = [proc.pid for proc in exif._BOUNDED._pool._processes.values()]
        assert children
        inodes = {os.fstat(s.fileno()).st_ino for s in (a, b)}
        for pid in children:
            held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            assert not {f"socket:[{i}]" for i in inodes} & held
    finally:
        a.close()
        b.close()
