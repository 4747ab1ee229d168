"""EXIF date and GPS against ExifTool's ground truth for 29 real camera files (samples/exif/expected.json)."""
import json

import pytest

from gateway.exif import gps_information, read_exif
from tests.conftest import EXIF

FILES = sorted(json.loads((EXIF / "expected.json").read_text())["files"])


@pytest.mark.parametrize("name", FILES)
def test_matches_exiftool(name, exif_expected):
    expected = exif_expected[name]
    got = read_exif((EXIF / name).read_bytes())
    assert got["datetime_original"] == expected["datetime_original"]
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


def test_garbage_never_raises():
    assert read_exif(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*garbage") == {"datetime_original": None,
                                                                               "gps": None}
