"""Make ``samples/coco_more/`` from the full-size photos in ``../shared/data/coco_more/`` (run once; the result is
committed, so nothing at run time or in the tests reads ``../shared``).

    python samples/tools/make_coco_more.py [--src ../shared/data/coco_more] [--dst samples/coco_more]

Each photo is decoded with Pillow, EXIF orientation applied, resized so its shorter side is 320 px (bicubic,
never upscaled) and saved as baseline JPEG, quality 90, 4:2:0, without metadata. ``annotations.json`` is copied
with each image's ``width``/``height``/``sha256`` set to the new file's and the original's kept as
``original_width``/``original_height``/``original_sha256``; ``info.downscaled`` records these settings.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[2]
SHORT_SIDE, QUALITY = 320, 90
README_HEADER = """# More COCO photos, downscaled for the repository

The 431 photos of `../shared/data/coco_more/` (the source README follows), made by
`samples/tools/make_coco_more.py`: EXIF orientation applied, shorter side resized to 320 px (bicubic), saved as
JPEG quality 90 (4:2:0) without metadata. `annotations.json` gives each photo's new `width`, `height` and
`sha256` and keeps the original's as `original_width`, `original_height` and `original_sha256`;
`info.downscaled` records the settings. Labels, sources, commits and licenses are unchanged.
"""


def downscale(data: bytes) -> tuple[bytes, int, int]:
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        w, h = im.size
        s = SHORT_SIDE / min(w, h)
        if s < 1:
            im = im.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=QUALITY, subsampling="4:2:0", optimize=True)
        return out.getvalue(), im.size[0], im.size[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=str(REPO.parent / "shared/data/coco_more"), help="(default: ../shared/data/coco_more)")
    p.add_argument("--dst", default=str(REPO / "samples/coco_more"), help="(default: samples/coco_more)")
    a = p.parse_args()
    src, dst = Path(a.src), Path(a.dst)
    (dst / "images").mkdir(parents=True, exist_ok=True)
    ann = json.loads((src / "annotations.json").read_text())
    for img in ann["images"]:
        raw = (src / img["file_name"]).read_bytes()
        small, w, h = downscale(raw)
        (dst / img["file_name"]).write_bytes(small)
        img.update(original_width=img["width"], original_height=img["height"],
                   original_sha256=img.get("sha256", hashlib.sha256(raw).hexdigest()),
                   width=w, height=h, sha256=hashlib.sha256(small).hexdigest())
    ann.setdefault("info", {})["downscaled"] = {
        "by": "samples/tools/make_coco_more.py", "short_side": SHORT_SIDE, "jpeg_quality": QUALITY,
        "resample": "bicubic", "exif_orientation_applied": True}
    (dst / "annotations.json").write_text(json.dumps(ann, indent=1) + "\n")
    source = (src / "README.md").read_text().replace("# ", "## Source: ", 1)
    (dst / "README.md").write_text(README_HEADER + "\n---\n\n" + source)
    print(f"wrote {len(ann['images'])} photos to {dst}")


if __name__ == "__main__":
    main()
