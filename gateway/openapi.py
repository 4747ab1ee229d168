"""OpenAPI 3.1 description of the gateway's API, served at ``/openapi.json``."""
import unicodedata

from tagger.image import FORMAT_NAMES, MEDIA_TYPES
from tagger.net import GATEWAY_PORT, local_url
from tagger.tags import POLICIES

# Characters refused in an id_name: in the Basic Multilingual Plane, the Unicode categories control, format
# (zero-width, bidi overrides), surrogates and line/paragraph separators. Everything else is allowed: an id_name is
# data, never a path. (BMP only, so that the spec's pattern means the same in ECMA regex engines without the u flag.)
REFUSED_ID_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def refused_id_name_categories(value: str) -> set[str]:
    """The refused categories present in ``value`` (empty when it is acceptable)."""
    return {cat for c in value if ord(c) <= 0xFFFF and (cat := unicodedata.category(c)) in REFUSED_ID_NAME_CATEGORIES}


# A page cursor: the last listed photo's upload time, "~", and its id_name as unpadded base64url (UTF-8). Any
# string of this form is a position in the listing, so the spec's pattern says exactly which cursors are accepted.
# (Empty: the first page, as no cursor.)
CURSOR_PATTERN = ("^(?:[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z"
                  "~(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?)?$")
CURSOR_MAX = 28 + 1366  # the time, "~", and a 256-character id_name of 4-byte UTF-8 characters in base64
# What the file part may be: the decoder's own list (tagger.image.FORMATS); anything else answers 415.
PHOTO_MEDIA_TYPES = MEDIA_TYPES


def _id_name_pattern() -> str:
    """A regex admitting exactly what ``gateway.api._id_name`` admits: no refused character, one non-space."""
    ranges, start = [], None
    for cp in range(0x10000):
        refused = unicodedata.category(chr(cp)) in REFUSED_ID_NAME_CATEGORIES
        if refused and start is None:
            start = cp
        elif not refused and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, 0xFFFF))

    def esc(cp: int) -> str:
        return f"\\u{cp:04x}"

    cls = "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges if not 0xD800 <= a <= 0xDFFF)
    return f"^[^{cls}]*[^\\s{cls}][^{cls}]*$"


_ID_NAME = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": _id_name_pattern(),
            "description": "1-256 printable Unicode characters (not only spaces; no control or invisible format "
                           "characters)"}
_POLICY = {"name": "policy", "in": "query", "required": False, "schema": {"enum": list(POLICIES)},
           "description": "tag policy: precise (the default: a label's tags right at least 7 times in 10), balanced "
                          "(F1-best) or complete (8 in 10 of a label's photos tagged)"}
_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_NO_POLICY = {**_ERROR, "description": "the served model was made before tag policies and has only balanced "
                                        "thresholds"}
# gunicorn's own answer (not JSON) to a request line over its 4094-byte limit, before the app sees the request
PHOTOS_LIMIT_MAX = 200  # GET /photos?limit=
_TOO_LONG = {"description": "request line over the HTTP server's 4094-byte limit (answered by gunicorn)"}

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "Photo tagger gateway", "version": "1.0",
             "description": "Store photos, then ask for their tags (34 COCO-Stuff labels), EXIF date and GPS."},
    "servers": [{"url": local_url(GATEWAY_PORT)}],
    "paths": {
        "/imgup": {"post": {
            "operationId": "storePhoto",
            "summary": "Store a photo under a caller-chosen id_name",
            "description": "The same bytes again change nothing (status unchanged, labels kept). Other bytes "
                           "replace the photo (replaced: true); the old one and its labels are kept in the "
                           "history. With if_absent=1 an existing id_name answers 409 instead. id_name: 1-256 "
                           "printable Unicode characters, no control or invisible format characters.",
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "encoding": {"file": {"contentType": ", ".join(PHOTO_MEDIA_TYPES)}},
                "schema": {
                "type": "object", "required": ["file", "id_name"], "additionalProperties": False,
                "properties": {"file": {"type": "string", "format": "binary", "minLength": 1,
                                        "description": f"the photo file: {FORMAT_NAMES}, decoding "
                                                       "completely (else 415)"},
                               "id_name": _ID_NAME,
                               "if_absent": {"type": "string", "enum": ["0", "1", "true", "false"],
                                             "description": "1: answer 409 instead of replacing"}}}}}},
            "responses": {
                "200": {"description": "stored", "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Stored"}}},
                    "links": {
                        "imginfo": {"operationId": "getImageInfo",
                                    "parameters": {"id_name": "$response.body#/image_id"}},
                        "imginfoByForm": {"operationId": "postImageInfo",
                                          "requestBody": {"id_name": "$response.body#/image_id"}},
                        "delete": {"operationId": "deletePhoto",
                                   "parameters": {"id_name": "$response.body#/image_id"}}}},
                "400": _ERROR, "409": {**_ERROR, "description": "if_absent=1 and the id_name is taken"},
                "413": {**_ERROR, "description": "the file is over the size or pixel limit"},
                "415": {**_ERROR, "description": "the file is not a photo the decoder reads, or does not decode "
                                                 "completely"}}}},
        "/imginfo": {
            "get": {"operationId": "getImageInfo", "summary": "Tags, EXIF date and GPS of a stored photo",
                    "parameters": [{"name": "id_name", "in": "query", "required": True, "schema": _ID_NAME},
                                   _POLICY],
                    "responses": {
                        "200": {"description": "photo information", "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/ImageInfo"}}}},
                        "400": _ERROR, "404": _ERROR, "414": _TOO_LONG, "422": _ERROR, "409": _NO_POLICY,
                        "503": {**_ERROR, "description": "model server unavailable; retry after Retry-After seconds",
                                "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}},
            "post": {"operationId": "postImageInfo", "summary": "Same as GET, with id_name as a form field",
                     "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                         "type": "object", "required": ["id_name"], "additionalProperties": False,
                         "properties": {"id_name": _ID_NAME, "policy": _POLICY["schema"]}}}}},
                     "responses": {"200": {"description": "as GET"}, "400": _ERROR, "404": _ERROR, "409": _NO_POLICY,
                                   "503": _ERROR}}},
        "/photos": {"get": {
            "operationId": "listPhotos",
            "summary": "Stored photos, newest first, paged; with tag: those a person labelled so or, unlabelled, "
                       "whose served prediction has it",
            "parameters": [
                {"name": "tag", "in": "query", "required": False, "schema": {"type": "string"}},
                _POLICY,
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": PHOTOS_LIMIT_MAX, "default": 50}},
                {"name": "cursor", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": CURSOR_PATTERN, "maxLength": CURSOR_MAX},
                 "description": "next_cursor of the previous page (upload time ~ base64url id_name)"}],
            "responses": {"200": {"description": "a page", "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/PhotoPage"}}}}, "400": _ERROR, "409": _NO_POLICY,
                "414": _TOO_LONG}}},
        "/photos/{id_name}": {"delete": {
            "operationId": "deletePhoto",
            "summary": "Move a photo and its earlier versions to the trash (restorable for TRASH_DAYS days)",
            "parameters": [{"name": "id_name", "in": "path", "required": True, "schema": _ID_NAME}],
            "responses": {"200": {"description": "in the trash", "content": {"application/json": {"schema": {
                "type": "object", "required": ["image_id", "status", "trash_id", "restorable_until"],
                "properties": {"image_id": {"type": "string"}, "status": {"const": "deleted"},
                               "trash_id": {"type": "integer"}, "restorable_until": {"type": "string"}}}}},
                "links": {"restore": {"operationId": "restorePhoto",
                                      "parameters": {"trash_id": "$response.body#/trash_id"}}}},
                "404": _ERROR, "414": _TOO_LONG}}},
        "/trash": {"get": {
            "operationId": "listTrash", "summary": "Deleted photos that can still be restored, newest first",
            "responses": {"200": {"description": "the trash", "content": {"application/json": {"schema": {
                "type": "object", "required": ["trash", "days"], "properties": {
                    "days": {"type": "number"},
                    "trash": {"type": "array", "items": {"type": "object", "required": [
                        "trash_id", "id_name", "deleted_at", "restorable_until", "sha256", "bytes",
                        "versions"]}}}}}}}}}},
        "/trash/{trash_id}/restore": {"post": {
            "operationId": "restorePhoto",
            "summary": "Put a deleted photo (and its earlier versions, labels and all) back under its id_name",
            "parameters": [{"name": "trash_id", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 1}}],
            "responses": {"200": {"description": "restored", "content": {"application/json": {"schema": {
                "type": "object", "required": ["image_id", "status"], "properties": {
                    "image_id": {"type": "string"}, "status": {"const": "restored"}}}}}},
                "404": _ERROR, "409": {**_ERROR, "description": "a photo is stored under that id_name now"}}}},
        "/session": {
            "get": {"operationId": "getSession", "security": [],
                    "summary": "Whether this client needs a token, and who is signed in (the annotation page asks)",
                    "responses": {"200": {"description": "the session", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Session"}}}}}},
            "post": {"operationId": "signIn", "security": [],
                     "summary": "Sign in with an API token: sets the session cookie (HttpOnly, SameSite=Strict)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["token"], "additionalProperties": False,
                         "properties": {"token": {"type": "string", "minLength": 1, "maxLength": 200,
                                                  "description": "a token make token printed"}}}}}},
                     "responses": {"200": {"description": "signed in", "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/Session"}}}},
                         "400": _ERROR, "401": {**_ERROR, "description": "the token is unknown or revoked"}}},
            "delete": {"operationId": "signOut", "security": [], "summary": "Sign out: the session ends",
                       "responses": {"200": {"description": "signed out", "content": {"application/json": {
                           "schema": {"$ref": "#/components/schemas/Session"}}}}}}},
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/readyz": {"get": {"summary": "Readiness: the store and TorchServe answer", "security": [], "responses": {
            "200": {"description": "ready"},
            "503": {**_ERROR, "description": "not ready; the reasons say what",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}}},
    },
    # Tokens are asked of other machines (GATEWAY_AUTH=auto), or of everyone (required): optional on loopback.
    "security": [{"bearerAuth": []}, {"sessionCookie": []}, {}],
    "components": {"securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API token (make token NAME=... "
                       "SCOPE=read|write): read for /imginfo and /photos, write (includes read) for the rest"},
        "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "tagger_session",
                          "description": "the annotation page's sign-in (POST /session)"}},
        "schemas": {
        "Session": {"type": "object", "required": ["auth", "signed_in"], "properties": {
            "auth": {"enum": ["required", "off"], "description": "whether this client's requests need a token"},
            "signed_in": {"type": "boolean"}, "name": {"type": "string"}, "scope": {"enum": ["read", "write"]}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Stored": {"type": "object", "required": ["image_id", "status"], "properties": {
            "image_id": {"type": "string"}, "status": {"enum": ["stored", "unchanged"]}, "sha256": {"type": "string"},
            "bytes": {"type": "integer"}, "replaced": {"type": "boolean"}}},
        "PhotoPage": {"type": "object", "required": ["photos", "next_cursor"], "properties": {
            "photos": {"type": "array", "items": {"type": "object", "required": ["image_id", "uploaded_at", "tags"],
                                                  "properties": {
                                                      "image_id": {"type": "string"},
                                                      "uploaded_at": {"type": "string"},
                                                      "tags": {"type": ["array", "null"], "items": {"type": "string"}},
                                                      "tags_from": {"enum": ["labels", "model", None]},
                                                      "sha256": {"type": "string"}}}},
            "next_cursor": {"type": ["string", "null"], "pattern": CURSOR_PATTERN},
            "model_version": {"type": ["string", "null"]}}},
        "GPS": {"type": ["object", "null"], "properties": {
            "GPSAltitude": {"type": ["string", "null"],
                            "description": "metres above (ref 0) or below (ref 1) sea level"},
            "GPSAltitudeRef": {"type": "string", "enum": ["0", "1"]},
            "GPSLatitude": {"type": "number", "description": "signed decimal degrees (south negative)"},
            "GPSLatitudeRef": {"type": "string", "enum": ["N", "S"]},
            "GPSLongitude": {"type": "number", "description": "signed decimal degrees (west negative)"},
            "GPSLongitudeRef": {"type": "string", "enum": ["E", "W"]}}},
        "ImageInfo": {"type": "object",
                      "required": ["image_id", "predict_tags", "data_information", "GPS_information"],
                      "properties": {
                          "image_id": {"type": "string"},
                          "predict_tags": {"type": "array", "items": {"type": "string"}},
                          "tag_policy": {"enum": list(POLICIES),
                                         "description": "the tag policy predict_tags follow (policy=, else the "
                                                        "gateway's TAGGER_TAG_POLICY)"},
                          "data_information": {"type": ["string", "null"],
                                               "description": "EXIF DateTimeOriginal (else DateTimeDigitized, "
                                                              "else DateTime), YYYY:MM:DD HH:MM:SS"},
                          "GPS_information": {"$ref": "#/components/schemas/GPS"},
                          "scores": {"type": "object", "additionalProperties": {"type": "number"}},
                          "model_version": {"type": "string"},
                          "date_source": {"enum": ["DateTimeOriginal", "DateTimeDigitized", "DateTime", None],
                                          "description": "the EXIF tag data_information came from"},
                          "offset_time": {"type": ["string", "null"], "description": "EXIF OffsetTimeOriginal"},
                          "camera": {"type": ["object", "null"], "properties": {
                              "make": {"type": ["string", "null"]}, "model": {"type": ["string", "null"]},
                              "lens_model": {"type": ["string", "null"]}}},
                          "image": {"type": "object", "properties": {
                              "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
                              "format": {"type": ["string", "null"]},
                              "orientation": {"type": ["integer", "null"], "minimum": 1, "maximum": 8}}},
                          "place": {"type": ["object", "null"],
                                    "description": "nearest GeoNames city to the GPS position (offline), or null",
                                    "properties": {"city": {"type": ["string", "null"]},
                                                   "region": {"type": ["string", "null"]},
                                                   "country": {"type": ["string", "null"]},
                                                   "country_code": {"type": ["string", "null"]},
                                                   "distance_km": {"type": "number"}}},
                          "exif_unread": {"type": ["string", "null"],
                                          "description": "why the photo's EXIF could not be read (its parse "
                                                         "overran or its parser died; each /imginfo parses again, "
                                                         "three times in all), or null"}}},
    }},
}

_UNAUTHORIZED = {**_ERROR, "description": "a token is needed (from another machine, or GATEWAY_AUTH=required) and "
                                          "none usable was sent",
                 "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}}
_FORBIDDEN = {**_ERROR, "description": "the token lacks the scope (read tokens cannot write), or a browser sent "
                                       "this from another site"}
for _path in SPEC["paths"].values():
    for _operation in _path.values():
        if _operation.get("security") != []:
            _operation["responses"].setdefault("401", _UNAUTHORIZED)
            _operation["responses"].setdefault("403", _FORBIDDEN)
