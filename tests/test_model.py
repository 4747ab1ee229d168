"""The packaged EfficientNet-Lite0 ImageNet weights map strictly onto the architecture and really recognise."""
import pytest
import torch
from PIL import Image

from model.network import build_model, lite0_package_weights_path, map_efficientnet_pytorch_keys
from tagger.presets import default_preprocessing, eval_transform
from tests.conftest import COCO


def test_every_package_key_maps_to_a_model_parameter():
    sd = torch.load(lite0_package_weights_path(), map_location="cpu", weights_only=True)
    mapped = map_efficientnet_pytorch_keys(sd)
    model = build_model("efficientnet_lite0", 34)
    assert set(mapped) == set(model.backbone.state_dict())
    for key, value in mapped.items():
        assert model.backbone.state_dict()[key].shape == value.shape, key


def test_unknown_key_is_an_error():
    with pytest.raises(KeyError):
        map_efficientnet_pytorch_keys({"_blocks.0._se_reduce.weight": torch.zeros(1)})


@pytest.mark.parametrize("image, wnid_words", [
    ("000000000471.jpg", "school bus"),
    ("000000000382.jpg", "alp"),
])
def test_imagenet_head_ranks_a_sensible_class_first(image, wnid_words):
    from timm.data import ImageNetInfo

    model = build_model("efficientnet_lite0", 34, pretrained=True).eval()
    x = eval_transform(default_preprocessing("efficientnet_lite0"))(Image.open(COCO / "images" / image).convert("RGB"))
    with torch.no_grad():
        top = int(model.backbone(x[None]).argmax())
    assert ImageNetInfo().index_to_description(top).startswith(wnid_words)


def test_factory_errors_are_clear():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg", 34)
    with pytest.raises(ValueError, match="num_labels"):
        build_model("resnet18", 0)
    with pytest.raises(FileNotFoundError, match="local file"):
        build_model("resnet18", 34, pretrained=True)


def test_output_shape_and_prior_default_is_head_only():
    model = build_model("efficientnet_lite0", 34, imagenet_prior=True).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 34)
        assert torch.allclose(out, model.head(model.features(x)), atol=1e-5)


def test_lite1_package_weights_map_strictly_and_recognise_a_bus():
    from timm.data import ImageNetInfo

    from model.network import map_efficientnet_pytorch_keys, package_weights_path

    sd = torch.load(package_weights_path("efficientnet_lite1"), map_location="cpu", weights_only=True)
    model = build_model("efficientnet_lite1", 34, pretrained=True).eval()
    assert set(map_efficientnet_pytorch_keys(sd, (1, 3, 3, 4, 4, 5, 1))) == set(model.backbone.state_dict())
    x = eval_transform(default_preprocessing("efficientnet_lite1"))(
        Image.open(COCO / "images/000000000471.jpg").convert("RGB"))
    assert x.shape == (3, 240, 240)
    with torch.no_grad():
        top = int(model.backbone(x[None]).argmax())
    assert "bus" in ImageNetInfo().index_to_description(top)
