import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from dsc_pose_core.geometry import (backproject, crop_affine, crop_intrinsics, project_points,
                                    transform_points, uncrop_pixels, zoom_in_box)

K = torch.tensor([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_projection_matches_opencv():
    rng = np.random.default_rng(0)
    points = rng.normal(scale=0.05, size=(50, 3))
    rvec, tvec = np.array([0.3, -0.2, 0.5]), np.array([0.02, -0.01, 0.9])
    expected, _ = cv2.projectPoints(points, rvec, tvec, K.numpy(), np.zeros(5))
    rotation = torch.from_numpy(Rotation.from_rotvec(rvec).as_matrix())
    got = project_points(transform_points(rotation, torch.from_numpy(tvec), torch.from_numpy(points)), K)
    np.testing.assert_allclose(got.numpy(), expected.reshape(-1, 2), atol=1e-9)


def test_backproject_inverts_projection():
    points = torch.tensor([[0.1, -0.05, 0.8], [-0.2, 0.1, 1.3]], dtype=torch.float64)
    pixels = project_points(points, K)
    np.testing.assert_allclose(backproject(pixels, points[:, 2], K).numpy(), points.numpy(), atol=1e-12)


def test_crop_intrinsics_equal_cropping_the_projection_and_invert_exactly():
    box = torch.tensor([200.3, 120.7, 328.3, 248.7], dtype=torch.float64)
    points = torch.tensor([[0.01, 0.02, 0.7], [-0.03, 0.0, 0.75]], dtype=torch.float64)
    full_pixels = project_points(points, K)
    crop_pixels = project_points(points, crop_intrinsics(K, box, 64, 64))
    affine = crop_affine(box, 64, 64)
    mapped = (torch.cat([full_pixels, torch.ones(2, 1, dtype=torch.float64)], -1) @ affine.T)[:, :2]
    np.testing.assert_allclose(crop_pixels.numpy(), mapped.numpy(), atol=1e-10)
    np.testing.assert_allclose(uncrop_pixels(crop_pixels, box, 64, 64).numpy(), full_pixels.numpy(), atol=1e-10)
    # box edges land on the crop's pixel edges
    corners = torch.tensor([[[box[0], box[1]], [box[2], box[3]]]], dtype=torch.float64)
    edge = (torch.cat([corners[0], torch.ones(2, 1, dtype=torch.float64)], -1) @ affine.T)[:, :2]
    np.testing.assert_allclose(edge.numpy(), [[-0.5, -0.5], [63.5, 63.5]], atol=1e-12)


def test_crop_affine_agrees_with_opencv_warp_of_an_image():
    """A crop made with cv2.warpAffine and the same matrix puts a bright pixel where K' projects it."""
    image = np.zeros((480, 640), np.float32)
    image[250, 300] = 1.0
    box = torch.tensor([268.5, 218.5, 332.5, 282.5], dtype=torch.float64)  # 64 px, integer-aligned: scale 2
    affine = crop_affine(box, 128, 128)
    crop = cv2.warpAffine(image, affine[:2].numpy(), (128, 128), flags=cv2.INTER_LINEAR)
    pixel = torch.tensor([[300.0, 250.0, 1.0]], dtype=torch.float64) @ affine.T
    peak = np.unravel_index(np.argmax(crop), crop.shape)
    assert abs(peak[1] - pixel[0, 0].item()) <= 0.5 and abs(peak[0] - pixel[0, 1].item()) <= 0.5


def test_zoom_in_box_keeps_aspect_and_contains_the_object():
    center = torch.tensor([[320.0, 240.0]])
    bbox = torch.tensor([[300.0, 200.0, 350.0, 260.0]])
    box = zoom_in_box(center, bbox, aspect=4 / 3, padding=1.4)[0]
    width, height = (box[2] - box[0]).item(), (box[3] - box[1]).item()
    assert abs(width / height - 4 / 3) < 1e-6
    assert box[0] <= 300 and box[1] <= 200 and box[2] >= 350 and box[3] >= 260
    assert torch.allclose((box[:2] + box[2:]) / 2, center[0])
