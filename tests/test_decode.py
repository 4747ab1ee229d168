"""The one decoder (handler, gateway upload, training): reduced decoding of large photos, same tags."""
import io

import pytest
import torch
from PIL import Image

from serving.stack import ensure_default_archive
from tagger.image import HANDLER_FORMATS, ImageError, decode_image, decoded_bytes, open_image, oriented_size, shrinks
from tests.conftest import COCO, EXIF, REPO
from tests.helpers import phone_jpeg

LARGE_CAMERA_FILES = ["30-type_error.jpg", "67-0_length_string.jpg", "87_OSError.jpg", "iphone_hdr_YES.jpg",
                      "IMG_5195.HEIC"]


@pytest.fixture(scope="module")
def phone_photos():
    names = sorted(p.name for p in (COCO / "images").iterdir())[::6][:16]
    return [phone_jpeg(n) for n in names]


def test_a_12_megapixel_jpeg_is_scaled_down_while_decoding(phone_photos):
    image = decode_image(phone_photos[0], min_side=256)
    assert image.mode == "RGB"
    assert 256 <= min(image.size) < 512
    assert image.size == (500, 375)  # DCT scale 1/8
    assert decode_image(phone_photos[0]).size == (4000, 3000)
    assert decode_image(phone_photos[0], min_side=5000).size == (4000, 3000)  # never enlarged


def test_small_photos_are_untouched_and_other_formats_reduce_after_decoding():
    data = (COCO / "images/000000000471.jpg").read_bytes()
    assert decode_image(data, min_side=256).tobytes() == decode_image(data).tobytes()
    png = io.BytesIO()
    Image.new("RGB", (2000, 1200), (10, 200, 30)).save(png, "PNG")
    image = decode_image(png.getvalue(), min_side=256)
    assert min(image.size) >= 256
    assert image.size == (500, 300)  # box-reduced by 4


@pytest.mark.parametrize("name", ["landscape_6.jpg", "87_OSError.jpg", "IMG_5195.HEIC"])
def test_orientation_is_applied_at_reduced_size_too(name):
    data = (EXIF / name).read_bytes()
    full, fast = decode_image(data), decode_image(data, min_side=128)
    assert (full.width > full.height) == (fast.width > fast.height)
    assert oriented_size(open_image(data)) == full.size


def test_truncated_and_non_images_still_fail_at_reduced_size(phone_photos):
    with pytest.raises(ImageError) as e:
        decode_image(phone_photos[0][: len(phone_photos[0]) // 2], min_side=64)
    assert e.value.status == 400
    with pytest.raises(ImageError) as e:
        decode_image(b"<html>not a photo</html>", min_side=64)
    assert e.value.status == 415


@pytest.mark.slow
def test_fast_decoding_keeps_the_default_models_tags(phone_photos):
    """At least 98% of image-label decisions identical to full decoding, on phone-size and camera photos."""
    from tagger.presets import eval_transform
    from training.checkpoint import load_for_inference

    ensure_default_archive()
    model, meta, _ = load_for_inference(REPO / "checkpoints/default/best.pt")
    transform = eval_transform(meta["preprocessing"])
    thresholds = torch.tensor([float("inf") if t is None else t for t in meta["thresholds"]])  # None: never a tag
    photos = phone_photos + [(EXIF / n).read_bytes() for n in LARGE_CAMERA_FILES]
    same = total = 0
    max_diff = 0.0
    with torch.no_grad():
        for data in photos:
            full = model(transform(decode_image(data))[None]).sigmoid()[0]
            fast = model(transform(decode_image(data, min_side=meta["preprocessing"]["resize"]))[None]).sigmoid()[0]
            same += int(((full >= thresholds) == (fast >= thresholds)).sum())
            total += len(thresholds)
            max_diff = max(max_diff, float((full - fast).abs().max()))
    print(f"fast vs full decoding: {same}/{total} decisions identical, largest score difference {max_diff:.4f}")
    assert same / total >= 0.98


@pytest.mark.parametrize("side", [224, 256, 272])
def test_decoded_pixels_decode_again_to_the_same_pixels(phone_photos, side):
    """What the gateway sends TorchServe for a photo the model decodes reduced (tagger.image.decoded_bytes) gives,
    decoded again as the handler does, exactly the pixels the handler gets from the photo itself."""
    png = io.BytesIO()
    Image.new("RGB", (2000, 1201), (10, 200, 30)).save(png, "PNG")
    photos = [phone_photos[0], phone_photos[1], png.getvalue()] + [
        (EXIF / n).read_bytes() for n in ("landscape_6.jpg", "87_OSError.jpg", "IMG_5195.HEIC")]
    for data in photos:
        first = decode_image(data, min_side=side)
        again = decode_image(decoded_bytes(first), min_side=side, formats=HANDLER_FORMATS)
        assert again.size == first.size
        assert again.tobytes() == first.tobytes()
        with pytest.raises(ImageError) as refused:  # a client's PPM is no photo format the service takes
            decode_image(decoded_bytes(first), min_side=side)
        assert refused.value.status == 415
    assert shrinks((4000, 3000), 256)
    assert not shrinks((640, 480), 256)
