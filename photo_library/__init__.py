"""Tag a photo folder into XMP sidecars that digiKam, darktable and Lightroom read; import the keywords people
typed as training labels. It talks to the gateway over HTTP only.

    python -m photo_library tag ~/Pictures                       # or: make tag DIR=~/Pictures
    python -m photo_library import ~/Pictures --output keywords.json
    python -m photo_library export ~/Pictures --format csv > tags.csv

See ``python -m photo_library --help`` and docs/PHOTO_LIBRARY.md.
"""
