"""schemathesis hooks for ``make fuzz-api``: the spec's file part is a photo (``encoding.contentType``), so photos
are generated for it, real JPEG, PNG, WebP and TIFF files (the formats it accepts, tagger.image.FORMATS, HEIF but for
its slow encoder) of random size and colour.

    SCHEMATHESIS_HOOKS=fuzz.api_hooks schemathesis run http://127.0.0.1:7777/openapi.json --checks all
"""
from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

from gateway.openapi import SPEC
from tagger.image import FORMATS as FORMATS_READ

FORMATS = tuple((FORMATS_READ[f][1][0], f) for f in ("JPEG", "PNG", "WEBP", "TIFF"))


@st.composite
def photo(draw, fmt: str) -> bytes:
    """A real photo file in ``fmt`` (1-48 pixels a side, one random colour)."""
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    image = Image.new("RGB", size, tuple(draw(st.integers(0, 255)) for _ in range(3)))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def id_name_is_valid(body) -> bool:
    """The form's id_name against the spec's own id_name schema (jsonschema_rs, the validator schemathesis uses)."""
    import jsonschema_rs

    schema = SPEC["paths"]["/imgup"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    if not isinstance(body, dict):
        return False
    value = body.get("id_name")
    # a form part is text: a generated true, 0 or 1.5 travels as "true", "0", "1.5" (what the server receives)
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (int, float)):
        value = str(value)
    return isinstance(value, str) and jsonschema_rs.validator_for(schema["properties"]["id_name"]).is_valid(value)


def contradicted(failure, case) -> bool:
    """A report the spec's own validator contradicts. schemathesis 4.32 calls some id_name mutations negative
    that its validator accepts ("000" -> "000*") or that the form sends as valid text (a boolean id_name is the
    part "true"), and its coverage phase sends "positive" multipart bodies with a custom part encoding whose
    id_name is empty (the schema says minLength 1)."""
    from schemathesis.core.failures import AcceptedNegativeData
    from schemathesis.openapi.checks import RejectedPositiveData

    if isinstance(failure, AcceptedNegativeData):
        return "/properties/id_name" in str(failure) and id_name_is_valid(case.body)
    if isinstance(failure, RejectedPositiveData):
        return case.operation.path == "/imgup" and not id_name_is_valid(case.body)
    return False


def _unless_contradicted(check):
    def wrapped(ctx, response, case):
        try:
            return check(ctx, response, case)
        except Exception as failure:  # noqa: BLE001 - a Failure, re-raised unless the spec contradicts it
            if contradicted(failure, case):
                return None
            raise
    wrapped.__name__ = f"{check.__name__}_as_the_spec_says"
    wrapped.__doc__ = f"schemathesis's {check.__name__}, less the reports the spec's own validator contradicts"
    return wrapped


def register_checks() -> None:
    """For the command line: the two data checks, less contradicted reports (run with --exclude-checks for the
    built-in two)."""
    from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

    for check in (positive_data_acceptance, negative_data_rejection):
        schemathesis.check(_unless_contradicted(check))


def register() -> None:
    for media_type, fmt in FORMATS:
        schemathesis.openapi.media_type(media_type, photo(fmt))


register()
if __import__("os").environ.get("SCHEMATHESIS_HOOKS") == __name__:  # loaded by the command line (make fuzz-api)
    register_checks()
