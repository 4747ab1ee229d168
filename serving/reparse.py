"""``make reparse-exif``: parse again the EXIF of every stored photo whose parse overran or whose parser died.

    python -m serving reparse-exif          # the store the running setup uses (serving.tokens.open_setup_store)

``/imginfo`` does the same for one photo when asked for it; this reaches the photos nobody asks for.
"""
from __future__ import annotations

from tagger.exif_parsers import ExifParsers, reparsed


def reparse_exif(store, parsers: ExifParsers) -> dict:
    """``{"read": n, "unread": [id_name, ...]}``: how many photos now have their EXIF, and which still do not."""
    read, unread = 0, []
    for record in store.unread_exif():
        fresh = reparsed(record["exif"], parsers.read(store.read_image(record)))
        if store.set_exif(record["id_name"], record["sha256"], fresh) and not fresh.get("unread"):
            read += 1
        else:
            unread.append(record["id_name"])
    return {"read": read, "unread": unread}
