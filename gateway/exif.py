"""EXIF date and GPS position of a photo, read with exifread.

    >>> read_exif(open("DSCN0010.jpg", "rb").read())
    {'datetime_original': '2008:10:22 16:28:39',
     'gps': {'latitude': 43.46744833, 'longitude': 11.88512667, 'altitude': None, 'altitude_ref': 0}}

Only the EXIF GPS IFD counts (XMP is ignored). Latitude and longitude are signed decimal degrees (S and W
negative); ``altitude`` is the unsigned GPSAltitude in metres and ``altitude_ref`` 1 means below sea level
(a missing ref reads as 0). Out-of-range or unreadable coordinates give ``gps: None``. Malformed EXIF never raises:
whatever cannot be read is ``None``.
"""
from __future__ import annotations

import io
import logging
import re

logger = logging.getLogger(__name__)

_DATETIME = re.compile(r"^\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}$")


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
    if any(p is None for p in parts):
        return None
    return sum(p / 60 ** i for i, p in enumerate(parts))


def _text(tag) -> str | None:
    if tag is None:
        return None
    values = tag.values
    text = values if isinstance(values, str) else str(tag.printable)
    text = text.replace("\x00", "").strip()
    return text or None


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
    ref_tag = tags.get("GPS GPSAltitudeRef")
    altitude_ref = 0
    if ref_tag is not None and getattr(ref_tag, "values", None):
        try:
            altitude_ref = 1 if int(ref_tag.values[0]) == 1 else 0
        except (TypeError, ValueError):
            altitude_ref = 0
    return {"latitude": lat, "longitude": lon, "altitude": altitude, "altitude_ref": altitude_ref,
            "latitude_ref": "S" if lat_ref == "S" else "N", "longitude_ref": "W" if lon_ref == "W" else "E"}


def read_exif(data: bytes) -> dict:
    """``{"datetime_original": str | None, "gps": dict | None}`` for the image bytes ``data``."""
    import exifread

    try:
        tags = exifread.process_file(io.BytesIO(data), details=False, extract_thumbnail=False)
    except Exception:  # exifread raises many kinds of errors on malformed files; a photo without EXIF is fine
        logger.info("unreadable EXIF", exc_info=True)
        tags = {}
    date = _text(tags.get("EXIF DateTimeOriginal"))
    try:
        gps = _gps(tags)
    except Exception:
        logger.info("unreadable GPS IFD", exc_info=True)
        gps = None
    return {"datetime_original": date if date and _DATETIME.match(date) else None, "gps": gps}


def gps_information(gps: dict | None) -> dict | None:
    """The original API's ``GPS_information`` object (``None`` when the photo has no usable position)."""
    if gps is None:
        return None
    altitude = gps["altitude"]
    return {
        "GPSAltitude": None if altitude is None else str(round(altitude, 6)),
        "GPSAltitudeRef": str(gps["altitude_ref"]),
        "GPSLatitude": round(gps["latitude"], 8),
        "GPSLatitudeRef": gps["latitude_ref"],
        "GPSLongitude": round(gps["longitude"], 8),
        "GPSLongitudeRef": gps["longitude_ref"],
    }
