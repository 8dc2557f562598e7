"""The normalised crop's box in synthetic training (data/dsc_views.py, ``ViewAugmentConfig.norm_box``).

At inference the normalised crop bounds the *predicted* mask (~0.85 x the tight visible box on the demo
checkpoint; RealPoseDataset likewise bounds the pseudo mask). Synthetic training used to loosen the
tight box outwards by 0-15 % per side and then take the box of its corners under the rotation
augmentation: ~1.25 x the tight box, so at inference the object filled ~1.5 x more of the crop than in
training and the normalised view's keypoints shrank (the pose came out too far away). These tests
measure the training crop's box relative to the tight box of the augmented visible mask, and check that
the keypoint targets and the view maps stay exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsc_testlib import tiny_model_config
from dsc_pose_core.data.dsc_views import (SyntheticPoseDataset, ViewAugmentConfig, augmented_mask_box, jitter_box,
                                          read_mask, synthetic_instances)
from dsc_pose_core.geometry.camera import project_posed
from dsc_pose_core.models.dsc_posenet import image_to_view
from dsc_pose_core.training import dsc_posenet as T


@pytest.fixture(scope="module")
def synth(tiny_dsc_data):
    cfg = T.DscPoseNetConfig(models_dir=str(tiny_dsc_data["models"]), obj_id=1, model=tiny_model_config())
    _, kp = T.load_object(cfg)
    return cfg.model, kp, synthetic_instances(tiny_dsc_data["synth"], 1)


def _crop_box_ratios(model, kp, instances, aug: ViewAugmentConfig, epochs: int = 12) -> np.ndarray:
    """Crop box side / tight side of the augmented visible mask, both measured in the normalised view
    from the returned image -> view matrix and the raw mask (independent of how the box was chosen)."""
    dataset = SyntheticPoseDataset(instances, kp, model, aug, seed=0)
    ratios = []
    for epoch in range(epochs):
        dataset.epoch = epoch
        for index, item in enumerate(instances):
            out = dataset[index]
            ys, xs = np.nonzero(read_mask(item.mask_path))
            pixels = torch.tensor(np.stack([xs, ys], 1), dtype=torch.float64)[None]
            matrix = out["n_matrix"].double()[None]
            view = image_to_view(pixels, matrix)[0].numpy()
            px = float(torch.linalg.det(matrix[0, :2, :2]).abs().sqrt())  # one image pixel in view px
            tight = max(np.ptp(view[:, 0]), np.ptp(view[:, 1])) + px
            ratios.append(model.norm_size / model.norm_context / tight)
    return np.asarray(ratios)


def test_training_crop_box_is_sized_like_the_tight_mask_box(synth):
    model, kp, instances = synth
    ratios = _crop_box_ratios(model, kp, instances, ViewAugmentConfig())
    assert 0.95 < np.median(ratios) < 1.05, np.percentile(ratios, [10, 50, 90])
    assert 0.93 < ratios.mean() < 1.07
    # symmetric jitter: both smaller and larger crops (inference boxes are ~0.85 x the tight box)
    assert np.percentile(ratios, 10) < 0.92 and np.percentile(ratios, 90) > 1.08
    assert ratios.min() > 0.75 and ratios.max() < 1.3


def test_old_loosened_crop_box_is_measured_larger(synth):
    """The previous behaviour, still selectable (``norm_box: loosened``): the same measure sees it."""
    model, kp, instances = synth
    ratios = _crop_box_ratios(model, kp, instances, ViewAugmentConfig(norm_box="loosened"))
    assert np.median(ratios) > 1.12 and ratios.min() >= 0.99


def test_without_jitter_the_crop_box_is_the_tight_augmented_mask_box(synth):
    model, kp, instances = synth
    ratios = _crop_box_ratios(model, kp, instances, ViewAugmentConfig(norm_box_size_jitter=0.0, norm_box_shift=0.0),
                              epochs=3)
    np.testing.assert_allclose(ratios, 1.0, atol=1e-6)


def test_keypoint_targets_stay_exact_and_views_match_their_matrices(synth):
    model, kp, instances = synth
    dataset = SyntheticPoseDataset(instances, kp, model, ViewAugmentConfig(), seed=0)
    for index, item in enumerate(instances):
        out = dataset[index]
        expected = project_posed(kp, item.K, item.R, item.t)[0]  # image px, untouched by augmentation
        np.testing.assert_allclose(out["keypoints"].numpy(), expected, atol=1e-3)
        mask = read_mask(item.mask_path)
        ys, xs = np.nonzero(mask)
        for tag in ("u", "n"):
            # the warped mask sits where the view matrix puts the mask's pixels
            centre = image_to_view(torch.tensor([[[xs.mean(), ys.mean()]]], dtype=torch.float64),
                                   out[f"{tag}_matrix"].double()[None])[0, 0].numpy()
            vy, vx = np.nonzero(out[f"{tag}_mask"].numpy() > 0.5)
            size = model.norm_size if tag == "n" else model.unnorm_size
            tolerance = 1.0 + 0.03 * size
            assert np.abs(np.array([vx.mean(), vy.mean()]) - centre).max() < tolerance, (tag, index)


def test_augmented_mask_box_and_jitter_helpers():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 4:16] = True  # pixels x 4..15, y 5..9 -> edges [3.5, 4.5, 15.5, 9.5]
    np.testing.assert_allclose(augmented_mask_box(mask, np.eye(3)), [3.5, 4.5, 15.5, 9.5])
    shift_scale = np.array([[2.0, 0, 1], [0, 2.0, -1], [0, 0, 1]])
    np.testing.assert_allclose(augmented_mask_box(mask, shift_scale), [8.0, 8.0, 32.0, 18.0])
    assert augmented_mask_box(np.zeros((4, 4), bool), np.eye(3)) is None
    box = np.array([0.0, 0.0, 10.0, 20.0])
    np.testing.assert_allclose(jitter_box(box, None, 0.2, 0.05), box)
    rng = np.random.default_rng(0)
    for _ in range(50):
        j = jitter_box(box, rng, 0.2, 0.05)
        factor = (j[2] - j[0]) / 10.0
        assert 0.8 <= factor <= 1.2 and np.isclose((j[3] - j[1]) / 20.0, factor)
        assert np.all(np.abs((j[:2] + j[2:]) / 2 - [5.0, 10.0]) <= 0.05 * 20.0 + 1e-9)


def test_unknown_norm_box_mode_is_rejected(synth):
    model, kp, instances = synth
    with pytest.raises(ValueError, match="norm_box"):
        SyntheticPoseDataset(instances, kp, model, ViewAugmentConfig(norm_box="tight"), seed=0)[0]


def test_real_augmented_crop_bounds_the_augmented_pseudo_mask(tiny_dsc_data, synth):
    """RealPoseDataset: N(x) and N(A(x)) both bound the pseudo mask as seen in that image."""
    from dsc_pose_core.data.dsc_views import RealPoseDataset, real_instances

    model, kp, _ = synth
    instances = real_instances(tiny_dsc_data["real"], 0, list(range(6)), 1, tiny_dsc_data["pseudo"])
    dataset = RealPoseDataset(instances, kp, model, ViewAugmentConfig(), 64, seed=0)
    for index, item in enumerate(instances):
        out = dataset[index]
        x, y, w, h = (int(v) for v in item.box_xywh)
        mask = read_mask(item.mask_path)
        inside = np.zeros_like(mask)
        inside[max(0, y):y + h, max(0, x):x + w] = True
        ys, xs = np.nonzero(mask & inside)
        pixels = torch.tensor(np.stack([xs, ys], 1), dtype=torch.float64)[None]
        for prefix in ("x_", "a_"):
            matrix = out[f"{prefix}n_matrix"].double()[None]
            view = image_to_view(pixels, matrix)[0].numpy()
            px = float(torch.linalg.det(matrix[0, :2, :2]).abs().sqrt())
            tight = max(np.ptp(view[:, 0]), np.ptp(view[:, 1])) + px
            assert abs(model.norm_size / model.norm_context / tight - 1.0) < 1e-4, (prefix, index)
