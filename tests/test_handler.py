"""The handler's functions and class without a server (a small context stands in for TorchServe's)."""
import io
import json

import pytest
import torch
from PIL import Image

from handler.core import load_model, postprocess, request_bytes
from handler.image import ImageError, decode_image
from tests.conftest import COCO, EXIF

JPEG = (COCO / "images/000000000471.jpg").read_bytes()


def _png(width, height):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("data, status, words", [
    (b"", 400, "empty"),
    (b"hello, not an image", 415, "not an image"),
    (JPEG[: len(JPEG) // 3], 400, "truncated"),
])
def test_bad_bytes_give_a_clear_error(data, status, words):
    with pytest.raises(ImageError, match=words) as info:
        decode_image(data)
    assert info.value.status == status


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageError, match="pixels") as info:
        decode_image(_png(3000, 3000), max_pixels=1_000_000)
    assert info.value.status == 413


def test_exif_orientation_is_applied():
    # landscape_6.jpg is stored 450x600 with Orientation=6 (rotate 90 degrees): it is a 600x450 landscape
    with Image.open(EXIF / "landscape_6.jpg") as stored:
        assert stored.size == (450, 600)
    image = decode_image((EXIF / "landscape_6.jpg").read_bytes())
    assert image.size == (600, 450) and image.mode == "RGB"


def test_heic_decodes():
    assert decode_image((EXIF / "IMG_5195.HEIC").read_bytes()).size == (2566, 3313)


def test_request_bytes_accepts_raw_and_multipart_and_rejects_json():
    assert request_bytes({"body": bytearray(b"abc")}) == b"abc"
    assert request_bytes({"data": b"abc"}) == b"abc"
    with pytest.raises(ValueError, match="raw request body"):
        request_bytes({"body": {"json": 1}})


def test_postprocess_schema(labels):
    meta = {"labels": labels, "thresholds": [0.5] * len(labels), "version": "9"}
    logits = torch.full((2, len(labels)), -5.0)
    logits[0, 0], logits[0, 3] = 3.0, 1.0
    out = postprocess(logits, meta)
    assert out[0]["tags"] == ["sea", "building-other"]
    assert out[1]["tags"] == []
    assert set(out[0]["scores"]) == {lab["name"] for lab in labels}
    assert out[0]["model_version"] == "9"


class Context:
    """The parts of ts.context.Context the handler uses."""

    def __init__(self, model_dir):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.manifest = {"model": {"modelName": "tagger", "serializedFile": "model.pt"}}
        self.model_yaml_config = {}
        self.statuses = {}
        self.metrics = _Metrics()

    def set_response_status(self, code=200, phrase="", idx=0):
        self.statuses[idx] = (code, phrase)

    def get_request_header(self, idx, key):
        return None


class _Metrics:
    def add_time(self, *args, **kwargs):
        pass


def test_handler_batch_with_one_bad_image_fails_only_that_request(tiny_model_dir):
    from handler.tagger_handler import TaggerHandler

    handler = TaggerHandler()
    ctx = Context(tiny_model_dir)
    handler.initialize(ctx)
    out = handler.handle([{"body": JPEG}, {"body": b"not an image"}, {"data": _png(80, 60)}], ctx)
    assert len(out) == 3
    assert set(out[0]) == {"tags", "scores", "model_version"} and out[0]["model_version"] == "0.0-test"
    assert "error" in out[1] and ctx.statuses == {1: (415, out[1]["error"])}
    assert set(out[2]["scores"]) == set(out[0]["scores"])
    json.dumps(out)  # the answer must serialise


def test_load_model_rebuilds_from_meta(tiny_model_dir):
    model, meta = load_model(tiny_model_dir)
    assert meta["arch"] == "resnet18"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, len(meta["labels"]))
