"""The handler's functions and class without a server (a small context stands in for TorchServe's)."""
import base64
import io
import json
import shutil

import pytest
import torch
from PIL import Image

from handler.core import load_model, postprocess, request_bytes
from tagger.image import ImageError, decode_image
from tests.conftest import COCO, EXIF
from tests.helpers import HandlerContext

JPEG = (COCO / "images/000000000471.jpg").read_bytes()


def _png(width, height):
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("data, status, words", [
    (b"", 400, "empty"),
    (b"hello, not an image", 415, "not a photo in a format"),
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
    assert image.size == (600, 450)
    assert image.mode == "RGB"


def test_heic_decodes():
    assert decode_image((EXIF / "IMG_5195.HEIC").read_bytes()).size == (2566, 3313)


def test_request_bytes_accepts_raw_multipart_and_base64_json():
    assert request_bytes({"body": bytearray(b"abc")}) == b"abc"
    assert request_bytes({"data": b"abc"}) == b"abc"
    assert request_bytes({"body": {"data": base64.b64encode(b"abc").decode()}}) == b"abc"
    assert request_bytes({"body": {"data": "data:image/jpeg;base64," + base64.b64encode(b"abc").decode()}}) == b"abc"
    with pytest.raises(ValueError, match='JSON body must be'):
        request_bytes({"body": {"json": 1}})
    with pytest.raises(ValueError, match="raw body"):
        request_bytes({"body": "some text"})


def test_postprocess_schema(labels):
    meta = {"labels": labels, "thresholds": [0.5] * len(labels), "version": "9"}
    logits = torch.full((2, len(labels)), -5.0)
    logits[0, 0], logits[0, 3] = 3.0, 1.0
    out = postprocess(logits, meta)
    assert out[0]["tags"] == ["sea", "building-other"]
    assert out[1]["tags"] == []
    assert set(out[0]["scores"]) == {lab["name"] for lab in labels}
    assert out[0]["model_version"] == "9"


def test_handler_batch_with_one_bad_image_fails_only_that_request(tiny_model_dir):
    from handler.tagger_handler import TaggerHandler

    handler = TaggerHandler()
    ctx = HandlerContext(tiny_model_dir)
    handler.initialize(ctx)
    gif = io.BytesIO()
    Image.new("RGB", (90, 70), (200, 30, 30)).save(gif, "GIF", save_all=True,
                                                   append_images=[Image.new("RGB", (90, 70), (0, 0, 255))])
    rows = [{"body": JPEG}, {"body": b"not an image"}, {"data": _png(80, 60)},
            {"body": {"data": base64.b64encode(JPEG).decode()}}, {"body": {"data": "%%% not base64"}},
            {"body": {"image": "x"}}, {"file": gif.getvalue()}, {"body": JPEG[: len(JPEG) // 2]}]
    raw = handler.handle(rows, ctx)
    assert all(isinstance(r, str) and "\n" not in r for r in raw)  # serialised here, compact
    out = [json.loads(r) for r in raw]
    assert set(out[0]) == {"tags", "tag_policy", "policy_tags", "scores", "model_version"}
    assert out[0]["model_version"] == "0.0-test"
    assert out[0]["tag_policy"] == "balanced"  # made before policies
    assert out[3] == out[0]  # the same photo as base64 JSON
    assert set(out[2]["scores"]) == set(out[0]["scores"])  # PNG
    assert ctx.statuses == {1: (415, out[1]["error"]), 4: (400, out[4]["error"]), 5: (400, out[5]["error"]),
                            6: (415, out[6]["error"]), 7: (400, out[7]["error"])}  # a GIF is no photo format
    assert "base64" in out[4]["error"]
    assert '{"data"' in out[5]["error"]
    assert "truncated" in out[7]["error"]


def test_load_model_rebuilds_from_meta(tiny_model_dir):
    model, meta = load_model(tiny_model_dir)
    assert meta["arch"] == "resnet18"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, len(meta["labels"]))


def test_every_optimised_runtime_matches_eager_within_1e_4(tiny_model_dir):
    from handler.core import OnnxRuntimeModel, optimize_for_inference, runtime_name

    model, meta = load_model(tiny_model_dir)
    onnx = optimize_for_inference(model, meta)  # the default: ONNX Runtime
    script = optimize_for_inference(model, meta, runtime="torchscript")
    assert isinstance(onnx, OnnxRuntimeModel)
    assert isinstance(script, torch.jit.ScriptModule)
    assert runtime_name(onnx).startswith("onnxruntime")
    assert runtime_name(script) == "torchscript"
    assert optimize_for_inference(model, meta, runtime="eager") is model
    x = torch.randn(5, 3, 64, 64)  # another batch size than the export's
    with torch.inference_mode():
        for fast in (onnx, script):
            assert float((fast(x) - model(x)).abs().max()) < 1e-4


def test_a_runtime_that_fails_falls_back_to_the_next(tiny_model_dir, monkeypatch):
    import handler.core as core

    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(core, "onnxruntime_model", broken)
    model, meta = load_model(tiny_model_dir)
    assert isinstance(core.optimize_for_inference(model, meta), torch.jit.ScriptModule)
    with pytest.raises(ValueError, match="choose one of"):
        core.optimize_for_inference(model, meta, runtime="tensorrt")


def _with_archived_onnx(tiny_model_dir, tmp_path):
    """A copy of the tiny model's folder with the ONNX graph an archive packs (``training.archive.pack_onnx``)."""
    from training.archive import pack_onnx

    d = tmp_path / "model"
    shutil.copytree(tiny_model_dir, d)
    model, meta = load_model(d)
    pack_onnx(d, model.state_dict(), meta)
    return d, model


def test_a_worker_serves_the_archives_own_onnx_graph_without_building_the_network(tiny_model_dir, tmp_path,
                                                                                   monkeypatch):
    import handler.core as core

    d, eager = _with_archived_onnx(tiny_model_dir, tmp_path)
    monkeypatch.setattr(core, "model_from_meta", lambda *a: pytest.fail("the network was built"))
    fast, meta = core.load_for_serving(d)
    assert fast.archived
    assert core.runtime_name(fast).endswith("the archive's graph)")
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        assert float((fast(x) - eager(x)).abs().max()) < 1e-4


@pytest.mark.parametrize("damage", ["other logits", "not a graph"])
def test_an_archived_graph_that_differs_or_breaks_gives_way_to_the_network(tiny_model_dir, tmp_path, damage):
    import handler.core as core
    from model.export import ONNX_CHECK_FILE, ONNX_FILE

    d, eager = _with_archived_onnx(tiny_model_dir, tmp_path)
    if damage == "other logits":  # as if this ONNX Runtime computed the graph otherwise than the network
        check = json.loads((d / ONNX_CHECK_FILE).read_text())
        check["logits"][0][0] += 0.01
        (d / ONNX_CHECK_FILE).write_text(json.dumps(check))
    else:
        (d / ONNX_FILE).write_bytes(b"not an onnx graph")
    fast, _ = core.load_for_serving(d)
    assert isinstance(fast, core.OnnxRuntimeModel)
    assert not fast.archived  # exported from the rebuilt network
    assert core.load_for_serving(d, runtime="eager")[0].__class__.__name__ == "Tagger"
