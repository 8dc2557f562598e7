"""Inference: only output cells inside the detection box vote (eq. 3's set O) and form the mask box."""

from __future__ import annotations

import numpy as np
import torch

from dsc_testlib import tiny_model_config
from dsc_pose_core.models.dsc_posenet import DscPoseNet, DscPoseNetEstimator, cell_centres, view_matrix


def _everything_is_foreground_model() -> DscPoseNet:
    """Mask logits high everywhere, zero offsets, uniform attention: a keypoint is the mean of the
    centres of the cells that vote, so it shows which cells did."""
    model = DscPoseNet(tiny_model_config()).eval()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[0] = 10.0  # object 0's mask logit
    return model


def test_region_removes_the_votes_of_cells_outside_it():
    model = _everything_is_foreground_model()
    size = model.config.unnorm_size
    images = torch.zeros(1, 3, size, size)
    cells = size // model.config.out_stride
    centres = cell_centres(cells, cells, model.config.out_stride)
    region = ((centres[:, 0] < size / 2) & (centres[:, 1] < size / 4)).float()[None]  # top-left block
    with torch.no_grad():
        everywhere = model(images, view="unnorm")["keypoints"][0]
        inside = model(images, view="unnorm", region=region)["keypoints"][0]
    np.testing.assert_allclose(everywhere.numpy(), np.tile(centres.mean(0), (model.n_keypoints, 1)), atol=1e-3)
    expected = centres[region[0] > 0].mean(0)
    np.testing.assert_allclose(inside.numpy(), np.tile(expected, (model.n_keypoints, 1)), atol=0.05)


def test_box_region_marks_the_cells_whose_centre_is_in_the_box():
    model = _everything_is_foreground_model()
    estimator = DscPoseNetEstimator(model, np.zeros((model.n_keypoints, 3)))
    size, stride = model.config.unnorm_size, model.config.out_stride
    window = np.array([100.0, 50.0, 180.0, 130.0])  # an 80 px window of the image
    box = np.array([150.0, 60.0, 175.0, 100.0])  # off-centre in it
    region = estimator._box_region(view_matrix(window, size), size, box)[0].reshape(size // stride, -1)
    scale = (window[2] - window[0]) / size
    expected = np.zeros_like(region.numpy())
    for row in range(expected.shape[0]):
        for col in range(expected.shape[1]):
            # view pixel i is centred at i, so a view x maps to window x1 + (x + 0.5) * scale
            x = window[0] + (col * stride + (stride - 1) / 2 + 0.5) * scale
            y = window[1] + (row * stride + (stride - 1) / 2 + 0.5) * scale
            expected[row, col] = box[0] <= x <= box[2] and box[1] <= y <= box[3]
    np.testing.assert_array_equal(region.numpy(), expected)
    assert 0 < expected.sum() < expected.size
    assert estimator._box_region(view_matrix(window, size), size, np.array([0.0, 0.0, 10.0, 10.0])) is None
