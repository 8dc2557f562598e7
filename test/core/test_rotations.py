import numpy as np
import torch
from scipy.spatial.transform import Rotation

from dsc_pose_core.geometry import (axis_angle_to_matrix, compose, invert, matrix_to_axis_angle, nearest_rotation,
                                    matrix_to_quaternion, matrix_to_rotation_6d, quaternion_to_matrix,
                                    rotation_6d_to_matrix, rotation_angle_between, to_matrix,
                                    transform_points)

SCIPY_ROTATIONS = Rotation.random(32, random_state=3)


def test_quaternion_matches_scipy_and_round_trips():
    quat_xyzw = SCIPY_ROTATIONS.as_quat()
    quat_wxyz = torch.from_numpy(np.roll(quat_xyzw, 1, axis=1))
    matrices = quaternion_to_matrix(quat_wxyz)
    np.testing.assert_allclose(matrices.numpy(), SCIPY_ROTATIONS.as_matrix(), atol=1e-12)
    back = matrix_to_quaternion(matrices)
    assert (back[:, 0] >= 0).all()
    # q and -q are the same rotation
    np.testing.assert_allclose(np.abs((back * quat_wxyz).sum(-1)).numpy(), 1.0, atol=1e-12)


def test_axis_angle_matches_scipy():
    rotvecs = torch.from_numpy(SCIPY_ROTATIONS.as_rotvec())
    np.testing.assert_allclose(axis_angle_to_matrix(rotvecs).numpy(), SCIPY_ROTATIONS.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(axis_angle_to_matrix(rotvecs)).numpy(), rotvecs.numpy(),
                               atol=1e-9)


def test_6d_representation_round_trip_and_orthonormalises():
    matrices = torch.from_numpy(SCIPY_ROTATIONS.as_matrix())
    np.testing.assert_allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(matrices)).numpy(), matrices.numpy(),
                               atol=1e-12)
    noisy = rotation_6d_to_matrix(matrix_to_rotation_6d(matrices) + 0.05 * torch.randn(32, 6, dtype=torch.float64))
    identity = noisy @ noisy.transpose(-1, -2)
    np.testing.assert_allclose(identity.numpy(), np.broadcast_to(np.eye(3), (32, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(noisy).numpy(), 1.0, atol=1e-12)


def test_rotation_angle_between_matches_scipy():
    other = Rotation.random(32, random_state=4)
    expected = (SCIPY_ROTATIONS.inv() * other).magnitude()
    got = rotation_angle_between(torch.from_numpy(SCIPY_ROTATIONS.as_matrix()), torch.from_numpy(other.as_matrix()))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_se3_compose_invert_and_transform():
    rotation = torch.from_numpy(SCIPY_ROTATIONS.as_matrix())
    translation = torch.randn(32, 3, dtype=torch.float64)
    rot_inv, trans_inv = invert(rotation, translation)
    rot_id, trans_id = compose(rotation, translation, rot_inv, trans_inv)
    np.testing.assert_allclose(rot_id.numpy(), np.broadcast_to(np.eye(3), (32, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(trans_id.numpy(), 0.0, atol=1e-12)
    points = torch.randn(32, 5, 3, dtype=torch.float64)
    homogeneous = torch.cat([points, torch.ones(32, 5, 1, dtype=torch.float64)], -1)
    expected = (homogeneous @ to_matrix(rotation, translation).transpose(-1, -2))[..., :3]
    np.testing.assert_allclose(transform_points(rotation, translation, points).numpy(), expected.numpy(), atol=1e-12)


def test_nearest_rotation_is_the_svd_projection():
    matrices = torch.from_numpy(SCIPY_ROTATIONS.as_matrix()) + 5e-4 * torch.randn(32, 3, 3, dtype=torch.float64)
    u, _, vt = np.linalg.svd(matrices.numpy())
    expected = u @ np.diag([1.0, 1.0, 0.0]) @ vt + np.einsum("bi,bj->bij", u[:, :, 2], vt[:, 2]) * np.linalg.det(
        u @ vt)[:, None, None]
    cleaned = nearest_rotation(matrices)
    np.testing.assert_allclose(cleaned.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(torch.linalg.det(cleaned).numpy(), 1.0, atol=1e-12)
