import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dsc_pose_core.geometry import differentiable_pnp, project_points, solve_pnp, transform_points

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def _scene(seed, batch=4, points=9):
    rng = np.random.default_rng(seed)
    object_points = rng.uniform(-0.05, 0.05, size=(points, 3))
    rotations = Rotation.random(batch, random_state=seed).as_matrix()
    translations = np.column_stack([rng.uniform(-0.1, 0.1, batch), rng.uniform(-0.1, 0.1, batch),
                                    rng.uniform(0.5, 1.2, batch)])
    pixels = project_points(transform_points(torch.from_numpy(rotations), torch.from_numpy(translations),
                                             torch.from_numpy(object_points).expand(batch, points, 3)),
                            torch.from_numpy(K))
    return object_points, rotations, translations, pixels.numpy()


def test_opencv_pnp_recovers_noise_free_poses():
    object_points, rotations, translations, pixels = _scene(0)
    for rotation, translation, uv in zip(rotations, translations, pixels):
        result = solve_pnp(object_points, uv, K)
        assert result.success
        np.testing.assert_allclose(result.rotation, rotation, atol=1e-4)
        np.testing.assert_allclose(result.translation, translation, atol=1e-4)


def test_ransac_pnp_rejects_outliers():
    object_points, rotations, translations, pixels = _scene(1, batch=1, points=30)
    uv = pixels[0].copy()
    uv[:6] += 80.0  # six gross outliers
    result = solve_pnp(object_points, uv, K, ransac=True, ransac_reprojection_px=2.0)
    assert not result.inliers[:6].any() and result.inliers[6:].all()
    np.testing.assert_allclose(result.translation, translations[0], atol=1e-4)


def test_pnp_rejects_too_few_points():
    with pytest.raises(ValueError, match="at least 4"):
        solve_pnp(np.zeros((3, 3)), np.zeros((3, 2)), K)


def test_differentiable_pnp_recovers_noise_free_poses():
    object_points, rotations, translations, pixels = _scene(2)
    rotation, translation = differentiable_pnp(torch.from_numpy(pixels), torch.from_numpy(object_points),
                                               torch.from_numpy(K))
    np.testing.assert_allclose(rotation.numpy(), rotations, atol=1e-4)
    np.testing.assert_allclose(translation.numpy(), translations, atol=1e-4)


def test_differentiable_pnp_agrees_with_opencv_on_noisy_input():
    object_points, _, _, pixels = _scene(3)
    noisy = pixels + np.random.default_rng(3).normal(scale=1.0, size=pixels.shape)
    rotation, translation = differentiable_pnp(torch.from_numpy(noisy), torch.from_numpy(object_points),
                                               torch.from_numpy(K))
    for b in range(len(noisy)):
        # OpenCV's globally optimal SQPnP, then its LM on the same reprojection objective
        ok, rvec, tvec = cv2.solvePnP(object_points, noisy[b], K, np.zeros(5), flags=cv2.SOLVEPNP_SQPNP)
        assert ok
        rvec, tvec = cv2.solvePnPRefineLM(object_points, noisy[b], K, np.zeros(5), rvec, tvec)
        np.testing.assert_allclose(rotation[b].numpy(), cv2.Rodrigues(rvec)[0], atol=1e-5)
        np.testing.assert_allclose(translation[b].numpy(), tvec.ravel(), atol=1e-5)


def test_differentiable_pnp_gradient_matches_finite_differences():
    object_points, _, _, pixels = _scene(4, batch=2)
    noisy = pixels + np.random.default_rng(4).normal(scale=0.5, size=pixels.shape)
    keypoints_2d = torch.from_numpy(noisy).requires_grad_(True)
    keypoints_3d = torch.from_numpy(object_points).clone().requires_grad_(True)
    weights = torch.from_numpy(np.random.default_rng(5).uniform(0.5, 1.5, size=(2, 9))).requires_grad_(True)

    def pose_outputs(points_2d, points_3d, point_weights):
        rotation, translation = differentiable_pnp(points_2d, points_3d, torch.from_numpy(K), point_weights)
        return torch.cat([rotation.reshape(2, -1), translation], dim=1)

    assert torch.autograd.gradcheck(pose_outputs, (keypoints_2d, keypoints_3d, weights), eps=1e-6, atol=1e-5,
                                    rtol=1e-4)


def test_differentiable_pnp_gradient_moves_keypoints_towards_target_pose():
    """A few gradient steps on 2D keypoints through PnP reduce the pose error (the training use)."""
    object_points, rotations, translations, pixels = _scene(6, batch=1)
    start = torch.from_numpy(pixels + 4.0).requires_grad_(True)
    optimizer = torch.optim.Adam([start], lr=0.5)
    target = torch.from_numpy(translations)
    errors = []
    for _ in range(20):
        _, translation = differentiable_pnp(start, torch.from_numpy(object_points), torch.from_numpy(K))
        loss = ((translation - target) ** 2).sum() * 1e6  # mm^2
        errors.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert errors[-1] < 0.1 * errors[0]
