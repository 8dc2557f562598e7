"""Zoom-in window (deepim appendix A eq. 6), crop rendering, flow targets, pose noise, box initialiser."""

import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from dsc_pose_core.box_initialiser import BoxInitConfig, box_initial_pose
from dsc_pose_core.deepim.flow import flow_from_renders
from dsc_pose_core.deepim.noise import PoseNoiseConfig, sample_pose_noise
from dsc_pose_core.data.boxes import mask_box_xyxy as mask_box
from dsc_pose_core.data.boxes import projected_box
from dsc_pose_core.deepim.zoom import box_in_crop, crop_image, project_origin, zoom_window
from dsc_pose_core.geometry.camera import crop_intrinsics


def _pose(angles_deg=(30, -20, 40), t=(0.01, -0.005, 0.5)):
    return Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix(), np.asarray(t, dtype=np.float64)


def test_zoom_window_eq6_properties():
    center = np.array([100.0, 60.0])
    obs = np.array([80.0, 50.0, 110.0, 90.0])
    rend = np.array([95.0, 30.0, 130.0, 65.0])
    W, H, lam = 640, 480, 1.4
    win = zoom_window(center, [obs, rend], W, H, lam)
    # centred on the projected origin, image aspect ratio
    np.testing.assert_allclose((win[:2] + win[2:]) / 2, center, atol=1e-9)
    np.testing.assert_allclose((win[2] - win[0]) / (win[3] - win[1]), W / H, rtol=1e-9)
    # eq. (6) literally
    x_dist = max(abs(b - center[0]) for b in (obs[0], obs[2], rend[0], rend[2]))
    y_dist = max(abs(b - center[1]) for b in (obs[1], obs[3], rend[1], rend[3]))
    r = W / H
    np.testing.assert_allclose(win[2] - win[0], max(x_dist, y_dist * r) * 2 * lam, rtol=1e-9)
    np.testing.assert_allclose(win[3] - win[1], max(x_dist / r, y_dist) * 2 * lam, rtol=1e-9)
    # both boxes inside with margin
    for b in (obs, rend):
        assert win[0] < b[0] and win[1] < b[1] and win[2] > b[2] and win[3] > b[3]


def test_crop_render_equals_crop_of_full_render(renderer, small_K, box_mesh):
    R, t = _pose()
    full = renderer.render(small_K, [(1, R, t)], 160, 120)
    box = mask_box(full.instance > 0)
    # zoom 1: a window of exactly the output size at an integer offset -> pixel-identical
    win = np.array([20.5, 10.5, 20.5 + 96, 10.5 + 72])
    Kc = crop_intrinsics(torch.as_tensor(small_K), torch.as_tensor(win), 96, 72).numpy()
    crop = renderer.render(Kc, [(1, R, t)], 96, 72)
    ref_mask = crop_image((full.instance > 0).astype(np.uint8), win, 96, 72, nearest=True) > 0
    assert (crop.instance > 0).sum() > 100
    assert ((crop.instance > 0) != ref_mask).mean() < 1e-3
    ref_rgb = crop_image(full.rgb, win, 96, 72)
    both = ref_mask & (crop.instance > 0)
    assert np.abs(ref_rgb[both].astype(int) - crop.rgb[both].astype(int)).mean() < 2.0
    # a real zoom-in (eq. 6 window, resampled 2-3x up): the crop render agrees with the resampled render
    win = zoom_window(project_origin(t, small_K), [box], 160, 120, 1.4)
    Kc = crop_intrinsics(torch.as_tensor(small_K), torch.as_tensor(win), 128, 96).numpy()
    crop = renderer.render(Kc, [(1, R, t)], 128, 96)
    ref_mask = crop_image((full.instance > 0).astype(np.float32), win, 128, 96) > 0.5
    iou = (ref_mask & (crop.instance > 0)).sum() / (ref_mask | (crop.instance > 0)).sum()
    assert iou > 0.9
    # the projected-vertex box is the rendered mask's box (continuous vs. quantised to whole pixels)
    np.testing.assert_allclose(projected_box(box_mesh.vertices, R, t, small_K), box, atol=1.5)
    # the observed box mapped into the crop lands where the crop's mask box is
    cb = mask_box(crop.instance > 0)
    np.testing.assert_allclose(box_in_crop(box, win, 128, 96), cb, atol=2.5)


def test_flow_pure_image_plane_translation(renderer, small_K):
    """Moving the object parallel to the image plane at constant depth is a pure image translation:
    flow = f * dx / z everywhere on the visible surface."""
    R, t = _pose((0, 0, 0), (0.0, 0.0, 0.5))  # faces the camera: depth of every visible pixel is equal
    dx, dy = 0.01, -0.004
    t2 = t + np.array([dx, dy, 0.0])
    src = renderer.render(small_K, [(1, R, t)], 160, 120, rgb=False)
    tgt = renderer.render(small_K, [(1, R, t2)], 160, 120, rgb=False)
    flow, valid = flow_from_renders(torch.from_numpy(src.depth)[None].double(), torch.from_numpy(small_K),
                                    torch.from_numpy(R)[None], torch.from_numpy(t)[None], torch.from_numpy(R)[None],
                                    torch.from_numpy(t2)[None], torch.from_numpy(tgt.depth)[None].double())
    z_front = 0.5 - 0.015  # the visible face of the 3 cm thick box
    expected = np.array([small_K[0, 0] * dx / z_front, small_K[1, 1] * dy / z_front])
    v = valid[0].numpy()
    assert v.sum() > 0.8 * (src.depth > 0).sum()
    f = flow[0].numpy()
    np.testing.assert_allclose(f[0][v], expected[0], atol=1e-3)
    np.testing.assert_allclose(f[1][v], expected[1], atol=1e-3)
    assert (f[:, ~v] == 0).all()
    # warping the source mask by the flow lands on the target mask
    ys, xs = np.nonzero(v)
    u2 = np.round(xs + f[0][v]).astype(int)
    v2 = np.round(ys + f[1][v]).astype(int)
    assert (tgt.instance[v2, u2] > 0).all()


def test_pose_noise_appendix_b1():
    rng = np.random.default_rng(0)
    R, t = _pose()
    cfg = PoseNoiseConfig()
    angles, dts = [], []
    for _ in range(400):
        Rn, tn = sample_pose_noise(rng, R, t, cfg)
        angles.append(Rotation.from_matrix(Rn @ R.T).magnitude())
        dts.append(tn - t)
    angles, dts = np.degrees(angles), np.array(dts)
    assert angles.max() <= 45.0 + 1e-6
    assert 15 < np.median(angles) < 35
    np.testing.assert_allclose(dts.std(0), [0.01, 0.01, 0.05], rtol=0.2)


def test_box_initialiser_centre_and_size(box_mesh, small_K):
    box = np.array([50.0, 30.0, 90.0, 62.0])
    for cfg in (BoxInitConfig(), BoxInitConfig(n_templates=12, n_inplane=4)):
        R, t = box_initial_pose(box, small_K, box_mesh.vertices, cfg)
        np.testing.assert_allclose(project_origin(t, small_K), [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2],
                                   atol=1e-6)
        pb = projected_box(box_mesh.vertices, R, t, small_K) + np.array([0.5, 0.5, -0.5, -0.5])
        size, target = math.sqrt((pb[2] - pb[0]) * (pb[3] - pb[1])), math.sqrt(40 * 32)
        assert abs(size / target - 1) < 0.05
        assert abs(np.linalg.det(R) - 1) < 1e-9
