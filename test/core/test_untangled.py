import numpy as np
import torch
from scipy.spatial.transform import Rotation

from dsc_pose_core.geometry import project_points
from dsc_pose_core.geometry.untangled import apply_untangled, relative_untangled
from dsc_pose_core.losses.point_matching import point_matching_loss


def _random_poses(n, seed):
    rng = np.random.default_rng(seed)
    rotation = torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix())
    translation = torch.from_numpy(np.column_stack([rng.uniform(-0.2, 0.2, n), rng.uniform(-0.2, 0.2, n),
                                                    rng.uniform(0.4, 1.5, n)]))
    return rotation, translation


def test_applying_the_relative_transform_to_the_source_gives_the_target():
    rot_src, trans_src = _random_poses(64, 0)
    rot_tgt, trans_tgt = _random_poses(64, 1)
    for fx, fy in ((1.0, 1.0), (572.4, 573.6)):
        rot_delta, v = relative_untangled(rot_src, trans_src, rot_tgt, trans_tgt, fx, fy)
        rot_out, trans_out = apply_untangled(rot_src, trans_src, rot_delta, v, fx, fy)
        np.testing.assert_allclose(rot_out.numpy(), rot_tgt.numpy(), atol=1e-12)
        np.testing.assert_allclose(trans_out.numpy(), trans_tgt.numpy(), atol=1e-12)


def test_untangled_components_mean_what_deepim_says():
    rot_src, trans_src = _random_poses(8, 2)
    K = torch.tensor([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    # a pure rotation about the object's centre leaves (vx, vy, vz) at zero
    spin = torch.from_numpy(Rotation.random(8, random_state=3).as_matrix())
    _, v = relative_untangled(rot_src, trans_src, spin @ rot_src, trans_src, 572.4, 573.6)
    assert v.abs().max() < 1e-12
    # vx, vy are the pixel shift of the projected centre; vz the log of the distance ratio
    trans_tgt = trans_src * torch.tensor([1.1, 0.9, 1.2], dtype=torch.float64)
    _, v = relative_untangled(rot_src, trans_src, rot_src, trans_tgt, 572.4, 573.6)
    pixel_shift = project_points(trans_tgt[:, None], K) - project_points(trans_src[:, None], K)
    np.testing.assert_allclose(v[:, :2].numpy(), pixel_shift[:, 0].numpy(), atol=1e-9)
    np.testing.assert_allclose(v[:, 2].numpy(), np.log(1 / 1.2), atol=1e-12)


def test_point_matching_loss_is_mean_l1_and_symmetry_aware():
    rot, trans = _random_poses(4, 4)
    points = torch.randn(300, 3, dtype=torch.float64) * 0.05
    assert point_matching_loss(rot, trans, rot, trans, points).abs().max() < 1e-12
    shifted = trans + torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64)
    np.testing.assert_allclose(point_matching_loss(rot, shifted, rot, trans, points).numpy(), 0.06, atol=1e-12)
    flip = torch.from_numpy(Rotation.from_euler("z", 180, degrees=True).as_matrix())
    flipped = rot @ flip
    symmetries = (torch.stack([torch.eye(3, dtype=torch.float64), flip]), torch.zeros(2, 3, dtype=torch.float64))
    assert point_matching_loss(flipped, trans, rot, trans, points).min() > 0.01
    assert point_matching_loss(flipped, trans, rot, trans, points, symmetries).abs().max() < 1e-12
