"""Preprocessing speed, side by side: the stock path against the project's decoder (``make bench``).

    python -m benchmarks.decode

Stock path: PIL full decode, then torchvision's Resize, CenterCrop, ToTensor, Normalize on the PIL image.
Ours: ``tagger.image.decode_image(data, min_side=resize)`` (JPEG DCT scaling while decoding), then the model's
own eval preset. Both for the default model's preprocessing (EfficientNet-Lite0) and ResNet18's, on a
12-megapixel JPEG (a sample photo upscaled to 4000x3000, quality 92, made here) and a 640x480 sample photo.
Medians of repeated runs, one thread, in one process.
"""
from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from tagger.image import decode_image
from tagger.presets import default_preprocessing, eval_transform

REPO = Path(__file__).resolve().parent.parent


def stock(pre: dict):
    from torchvision import transforms as T

    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[pre["interpolation"]]
    t = T.Compose([T.Resize(pre["resize"], interpolation=interp), T.CenterCrop(pre["crop"]), T.ToTensor(),
                   T.Normalize(pre["mean"], pre["std"])])

    def run(data: bytes) -> torch.Tensor:
        with Image.open(io.BytesIO(data)) as im:
            return t(im.convert("RGB"))
    return run


def ours(pre: dict):
    t = eval_transform(pre)
    return lambda data: t(decode_image(data, min_side=pre["resize"]))


def median_ms(fn, data, n):
    fn(data)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn(data)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    torch.set_num_threads(1)
    small = (REPO / "samples/coco_subset/images/000000000471.jpg").read_bytes()
    with Image.open(io.BytesIO(small)) as im:
        big_im = im.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big_im.save(buf, "JPEG", quality=92)
    big = buf.getvalue()
    print("== preprocessing, median ms per photo (1 thread) ==")
    print(f"{'model':20s} {'photo':18s} {'stock':>9s} {'ours':>9s} {'speed-up':>9s}")
    for arch in ("efficientnet_lite0", "resnet18"):
        pre = default_preprocessing(arch)
        for label, data, n in (("12 MP JPEG", big, 15), ("640x480 JPEG", small, 60)):
            a, b = median_ms(stock(pre), data, n), median_ms(ours(pre), data, n)
            goal = "goal >= 5x" if data is big else "goal >= 1x"
            print(f"{arch:20s} {label:18s} {a:9.1f} {b:9.1f} {a / b:8.1f}x  ({goal})")


if __name__ == "__main__":
    main()
