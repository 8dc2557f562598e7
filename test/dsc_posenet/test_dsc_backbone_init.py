"""DSC-PoseNet's backbone initialised from this package's own segmentation network (``init_backbone``)."""

from __future__ import annotations

import pytest
import torch

from dsc_testlib import tiny_model_config
from dsc_pose_core.models.dsc_posenet import DscPoseNet
from dsc_pose_core.models.segmentation import RoiSegmenter
from dsc_pose_core.typed_config import ConfigError
from dsc_pose_core.training.dsc_posenet import load_backbone_from_segmentation
from dsc_pose_core.training.segmentation import save_segmentation


def _segmentation_checkpoint(tmp_path, encoder="resnet18"):
    torch.manual_seed(1)
    seg = RoiSegmenter(2, encoder, decoder_channels=16)
    with torch.no_grad():  # running statistics that differ from a fresh network's
        seg.net.encoder.bn1.running_mean.uniform_(-1, 1)
    config = {"segmentation": {"model": {"encoder": encoder, "decoder_channels": 16}}}
    return seg, save_segmentation(tmp_path / "seg.pt", seg, config, [1, 2], 0, {})


def test_encoder_weights_and_statistics_reach_both_views(tmp_path):
    seg, path = _segmentation_checkpoint(tmp_path)
    model = DscPoseNet(tiny_model_config())
    head_before = model.head.weight.clone()
    count = load_backbone_from_segmentation(model, path)
    encoder = seg.net.encoder
    assert count > 0
    torch.testing.assert_close(model.stem[0].weight, encoder.conv1.weight)
    for k, stage in enumerate(model.stages):
        torch.testing.assert_close(stage[0].conv1.weight, getattr(encoder, f"layer{k + 1}")[0].conv1.weight)
    for view in ("unnorm", "norm"):  # each view's BatchNorm statistics start from the encoder's
        torch.testing.assert_close(getattr(model.stem[1], f"running_mean_{view}"), encoder.bn1.running_mean)
    torch.testing.assert_close(model.head.weight, head_before)  # the keypoint head is not touched


def test_a_different_resnet_is_one_clear_error(tmp_path):
    _, path = _segmentation_checkpoint(tmp_path, encoder="resnet34")
    with pytest.raises(ConfigError, match="same ResNet"):
        load_backbone_from_segmentation(DscPoseNet(tiny_model_config()), path)
