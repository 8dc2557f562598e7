"""The differentiable (PyTorch3D) renderer: agreement with the fast renderer, camera convention,
the vectorised soft silhouette against PyTorch3D's own, and pose recovery by gradient descent."""

import numpy as np
import pytest
import torch
from render_testlib import crop_around

from dsc_pose_core.geometry import axis_angle_to_matrix, rotation_angle_between
from dsc_pose_core.render import DifferentiableRenderer, FastRenderer
from dsc_pose_core.render.fit import fit_pose_to_silhouette


@pytest.fixture(autouse=True)
def _two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # robust on a shared 2-core machine (OpenMP spin-waits under load)
    yield
    torch.set_num_threads(previous)


def _pose(lmo, obj_id, im_index=0):
    im_id = lmo.val_ids[im_index]
    for o, R, t in lmo.poses(im_id):
        if o == obj_id:
            return lmo.K(im_id), R, t
    raise AssertionError(f"object {obj_id} not in val frame {im_id}")


def _tensors(*arrays):
    return [torch.as_tensor(np.asarray(a), dtype=torch.float32)[None] for a in arrays]


@pytest.mark.parametrize("obj_id", [1, 10])
def test_fast_and_differentiable_renderers_agree(lmo, obj_id):
    mesh = lmo.decimated(obj_id, 2000)
    K, R, t = _pose(lmo, obj_id)
    K_crop = crop_around(K, t, half=70.0, size=128)
    with FastRenderer(128, 128) as fast:
        fast.add_object(obj_id, mesh)
        reference = fast.render(K_crop, [(obj_id, R, t)])
    diff = DifferentiableRenderer()
    diff.add_object(obj_id, mesh)
    depth = diff.depth(*_tensors(K_crop), obj_id, *_tensors(R, t), 128, 128)[0].numpy()
    mask = depth > 0
    assert reference.mask.sum() > 1000
    iou = (mask & reference.mask).sum() / (mask | reference.mask).sum()
    assert iou >= 0.98
    both = mask & reference.mask
    assert np.abs(depth[both] - reference.depth[both]).max() < 1e-3


def test_ndc_mapping_equals_pytorch3d_screen_camera_with_half_pixel_shift(lmo):
    """Our projection into PyTorch3D's NDC equals its own OpenCV camera with (cx, cy) + 0.5."""
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
    from pytorch3d.structures import Meshes
    from pytorch3d.utils import cameras_from_opencv_projection

    mesh = lmo.decimated(9, 600)
    K, R, t = _pose(lmo, 9)
    width, height = 96, 64  # non-square on purpose
    K_crop = crop_around(K, t, half=50.0, size=64)
    K_crop[0, 2] += 16  # widen to 96 columns, same pixel scale
    ours = DifferentiableRenderer()
    ours.add_object(9, mesh)
    depth = ours.depth(*_tensors(K_crop), 9, *_tensors(R, t), width, height)[0]

    K_p3d = torch.tensor(K_crop, dtype=torch.float32)[None].clone()
    K_p3d[:, 0, 2] += 0.5
    K_p3d[:, 1, 2] += 0.5
    cameras = cameras_from_opencv_projection(*_tensors(R, t), K_p3d, torch.tensor([[height, width]]))
    rasterizer = MeshRasterizer(cameras, RasterizationSettings(image_size=(height, width), faces_per_pixel=1,
                                                              bin_size=0))
    meshes = Meshes([torch.tensor(mesh.vertices, dtype=torch.float32)], [torch.tensor(mesh.faces)])
    fragments = rasterizer(meshes)
    theirs = torch.where(fragments.pix_to_face[0, ..., 0] >= 0, fragments.zbuf[0, ..., 0], torch.zeros(()))
    assert (depth > 0).sum() > 1000
    assert ((depth > 0) != (theirs > 0)).sum() <= 2  # ties on edges
    both = (depth > 0) & (theirs > 0)
    assert (depth[both] - theirs[both]).abs().max() < 1e-4


def test_vectorised_soft_silhouette_matches_pytorch3d_values_and_gradients(lmo):
    mesh = lmo.decimated(1, 300)
    K, R, t = _pose(lmo, 1)
    K_crop = crop_around(K, t, half=45.0, size=48)
    renderer = DifferentiableRenderer(faces_per_pixel=20, sigma_px=1.0)
    renderer.add_object(1, mesh)
    weights = torch.rand(1, 48, 48, generator=torch.Generator().manual_seed(0))
    results = {}
    for method in ("fast", "pytorch3d"):
        R_var, t_var = [x.clone().requires_grad_(True) for x in _tensors(R, t)]
        silhouette = renderer.silhouette(*_tensors(K_crop), 1, R_var, t_var, 48, 48, method=method)
        (silhouette * weights).sum().backward()
        results[method] = (silhouette.detach(), R_var.grad, t_var.grad)
    (s_fast, gR_fast, gt_fast), (s_ref, gR_ref, gt_ref) = results["fast"], results["pytorch3d"]
    assert 0.0 <= s_fast.min() and s_fast.max() <= 1.0 and (s_fast > 0.5).sum() > 300
    assert (s_fast - s_ref).abs().max() < 1e-4
    torch.testing.assert_close(gR_fast, gR_ref, rtol=1e-3, atol=1e-3 * gR_ref.abs().max().item())
    torch.testing.assert_close(gt_fast, gt_ref, rtol=1e-3, atol=1e-3 * gt_ref.abs().max().item())


def test_gradient_descent_on_dice_recovers_a_perturbed_pose(lmo):
    """From 10 deg / 2 cm off, Adam on the Dice loss between the soft silhouette and the GT pose's
    silhouette brings rotation and translation back (64 px crop, ~800-face mesh)."""
    obj_id, size = 1, 64
    mesh = lmo.decimated(obj_id, 800)
    K, R, t = _pose(lmo, obj_id)
    K_crop = torch.tensor(crop_around(K, t, half=75.0, size=size), dtype=torch.float32)
    renderer = DifferentiableRenderer(faces_per_pixel=30, sigma_px=1.0)
    renderer.add_object(obj_id, mesh)
    R_gt, t_gt = _tensors(R, t)
    with torch.no_grad():
        target = renderer.silhouette(K_crop, obj_id, R_gt, t_gt, size, size)
    generator = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(3, generator=generator), dim=0)
    direction = torch.nn.functional.normalize(torch.randn(3, generator=generator), dim=0)
    R0 = axis_angle_to_matrix(axis * np.deg2rad(10.0))[None] @ R_gt
    t0 = t_gt + 0.02 * direction

    fit = fit_pose_to_silhouette(renderer, K_crop, obj_id, R0, t0, target, size, size, steps=50)

    def errors(R_est, t_est):
        angle = np.rad2deg(rotation_angle_between(R_est.double(), R_gt.double()).item())
        return angle, (t_est - t_gt).norm().item()

    start, end = errors(R0, t0), errors(fit.R, fit.t)
    assert fit.losses[-1].item() < 0.3 * fit.losses[0].item()
    assert end[0] < 0.3 * start[0], (start, end)
    assert end[1] < 0.3 * start[1], (start, end)
