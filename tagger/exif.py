"""EXIF of a photo, parsed with exifread: the pure parser, and the loop a parser process runs.

    >>> parse_exif(open("DSCN0010.jpg", "rb").read())     # in this process; tagger.exif_parsers.read_exif bounds it
    {'datetime': '2008:10:22 16:28:39', 'date_source': 'DateTimeOriginal', 'datetime_original': '2008:10:22 16:28:39',
     'offset_time': None, 'camera': {'make': 'NIKON', 'model': 'COOLPIX P6000', 'lens_model': None},
     'orientation': 1, 'gps': {'latitude': 43.46744833, 'longitude': 11.88512667, 'altitude': None, ...}}

- The date is DateTimeOriginal, else DateTimeDigitized, else DateTime (``date_source`` says which), and only a
  real ``YYYY:MM:DD HH:MM:SS`` date counts (``0000:00:00 00:00:00`` and garbage are ``None``).
- Only the EXIF GPS IFD counts (XMP is ignored). Latitude and longitude are signed decimal degrees (S and W
  negative). ``altitude`` is the unsigned GPSAltitude in metres, and ``altitude_ref`` 1 means below sea level
  (a missing ref reads as 0). Out-of-range coordinates or 0/0 rationals give ``gps: None`` (an altitude of 0/0
  gives ``altitude: None``).
- JPEG APP1 segments and WebP chunks are walked here (exifread misses an EXIF segment after an XMP one, and does
  not read WebP); PNG eXIf, TIFF and HEIC/HEIF go to exifread whole. Whatever cannot be read is ``None``.
- Hostile EXIF must not hang a server: ``tagger.exif_parsers`` runs this module as a process
  (``python -m tagger.exif``) per parse in flight, and kills one that overruns.
"""
from __future__ import annotations

import importlib
import io
import json
import logging
import re
import struct
import sys

import exifread

from tagger.lifetime import die_with_parent

logger = logging.getLogger(__name__)

_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2}) (\d{2}):(\d{2}):(\d{2})$")
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")
JPEG_EXIF_BYTES = 256 * 1024
DATE_TAGS = (("EXIF DateTimeOriginal", "DateTimeOriginal"), ("EXIF DateTimeDigitized", "DateTimeDigitized"),
             ("Image DateTime", "DateTime"))
EMPTY = {"datetime": None, "date_source": None, "datetime_original": None, "offset_time": None,
         "camera": None, "orientation": None, "gps": None}


def _ratio(value) -> float | None:
    num, den = getattr(value, "numerator", value), getattr(value, "denominator", 1)
    try:
        return float(num) / float(den) if float(den) != 0 else None
    except (TypeError, ValueError):
        return None


def _degrees(tag) -> float | None:
    values = getattr(tag, "values", None)
    if not values or len(values) > 3:
        return None
    parts = [_ratio(v) for v in values]
    if any(p is None or p < 0 for p in parts):
        return None
    return sum(p / 60 ** i for i, p in enumerate(parts))


def _text(tag) -> str | None:
    if tag is None:
        return None
    values = tag.values
    text = values if isinstance(values, str) else str(tag.printable)
    text = text.replace("\x00", "").strip()
    return text or None


def _date(text: str | None) -> str | None:
    m = _DATETIME.match(text or "")
    if not m:
        return None
    y, mo, d, h, mi, s = map(int, m.groups())
    if not (1 <= y and 1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60):
        return None
    return text


def _gps(tags: dict) -> dict | None:
    lat, lon = _degrees(tags.get("GPS GPSLatitude")), _degrees(tags.get("GPS GPSLongitude"))
    if lat is None or lon is None:
        return None
    lat_ref = (_text(tags.get("GPS GPSLatitudeRef")) or "N").upper()[:1]
    lon_ref = (_text(tags.get("GPS GPSLongitudeRef")) or "E").upper()[:1]
    lat = -lat if lat_ref == "S" else lat
    lon = -lon if lon_ref == "W" else lon
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    altitude = None
    alt_tag = tags.get("GPS GPSAltitude")
    if alt_tag is not None and getattr(alt_tag, "values", None):
        altitude = _ratio(alt_tag.values[0])
        if altitude is not None and not 0 <= altitude < 100_000:
            altitude = None
    ref_tag = tags.get("GPS GPSAltitudeRef")
    altitude_ref = 0
    if ref_tag is not None and getattr(ref_tag, "values", None):
        try:
            altitude_ref = 1 if int(ref_tag.values[0]) == 1 else 0
        except (TypeError, ValueError):
            altitude_ref = 0
    return {"latitude": lat, "longitude": lon, "altitude": altitude, "altitude_ref": altitude_ref,
            "latitude_ref": "S" if lat_ref == "S" else "N", "longitude_ref": "W" if lon_ref == "W" else "E"}


def jpeg_exif_block(data: bytes) -> bytes | None:
    """The TIFF block of a JPEG's EXIF APP1 segment, found by walking the segments (an XMP APP1 may come first,
    which stops exifread's own search), or ``None``."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no EXIF after this
            return None
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte or standalone marker
            pos += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            return None
        payload = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
            return payload[6:]
        pos += 2 + length
    return None


def webp_exif_block(data: bytes) -> bytes | None:
    """The TIFF block of a WebP's ``EXIF`` chunk (exifread does not read WebP), or ``None``."""
    pos = 12
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if kind == b"EXIF":
            block = data[pos + 8:pos + 8 + size]
            return block[6:] if block[:6] == b"Exif\x00\x00" else block
        pos += 8 + size + (size & 1)
    return None


def heif_extents_read_nothing(data: bytes) -> bool:
    """Whether a HEIF file's ``iloc`` box declares extents whose fields are all 0 bytes wide. exifread loops over
    every extent it declares, and then reads nothing per extent: a few hundred bytes can declare billions (a fuzzer
    found one that took 1.2 s, 16 s instrumented). Such a box locates no item, the Exif one included."""
    at = data.find(b"iloc")
    if at < 4 or at + 10 > len(data):
        return False
    version, sizes, more = data[at + 4], data[at + 8], data[at + 9]
    index_size = more & 0x0F if version in (1, 2) else 0
    return (sizes >> 4) + (sizes & 0x0F) + index_size == 0


def parse_exif(data: bytes) -> dict:
    """The EXIF fields of ``data``, parsed in this process (``read_exif`` runs it in the bounded one)."""
    if data[:2] == b"\xff\xd8":
        data = jpeg_exif_block(data) or b""
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        data = webp_exif_block(data) or b""
    elif data[4:8] == b"ftyp" and heif_extents_read_nothing(data):
        data = b""
    try:
        tags = exifread.process_file(io.BytesIO(data), details=False, extract_thumbnail=False) if data else {}
    except Exception:  # noqa: BLE001 - exifread raises many kinds of errors on malformed files
        logger.info("unreadable EXIF", exc_info=True)
        tags = {}
    out = dict(EMPTY)
    for tag, name in DATE_TAGS:
        value = _date(_text(tags.get(tag)))
        if value is not None:
            out["datetime"], out["date_source"] = value, name
            break
    out["datetime_original"] = _date(_text(tags.get("EXIF DateTimeOriginal")))
    offset = _text(tags.get("EXIF OffsetTimeOriginal"))
    out["offset_time"] = offset if offset and _OFFSET.match(offset) else None
    camera = {"make": _text(tags.get("Image Make")), "model": _text(tags.get("Image Model")),
              "lens_model": _text(tags.get("EXIF LensModel"))}
    out["camera"] = camera if any(camera.values()) else None
    orientation = tags.get("Image Orientation")
    try:
        value = int(orientation.values[0]) if orientation is not None and orientation.values else None
        out["orientation"] = value if value in range(1, 9) else None
    except (TypeError, ValueError, IndexError):
        out["orientation"] = None
    try:
        out["gps"] = _gps(tags)
    except Exception:  # noqa: BLE001 - hostile GPS IFDs fail in any way; the photo keeps gps null
        logger.info("unreadable GPS IFD", exc_info=True)
        out["gps"] = None
    return out


def serve(parse=parse_exif, stdin=None, stdout=None) -> None:
    """The parser process's loop: read a frame (4-byte big-endian length, the bytes), answer a frame (the JSON of
    ``parse``'s dict), until stdin ends (the parent closed it, or died)."""
    stdin, stdout = stdin or sys.stdin.buffer, stdout or sys.stdout.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        data = stdin.read(struct.unpack(">I", head)[0])
        answer = json.dumps(parse(data)).encode()
        stdout.write(struct.pack(">I", len(answer)) + answer)
        stdout.flush()


if __name__ == "__main__":  # python -m tagger.exif PARENT_PID [module:function]
    die_with_parent(int(sys.argv[1]))
    parse = parse_exif
    if len(sys.argv) > 2:  # another parse function (tests: one that hangs on a marked file)
        module, _, name = sys.argv[2].partition(":")
        parse = getattr(importlib.import_module(module), name)
    serve(parse)
