"""Pinhole cameras in OpenCV convention and crop/zoom transforms with exact inverses.

Pixel convention (OpenCV/BOP): x right, y down, z forward; the centre of pixel (i, j) sits at the
continuous coordinate (i, j), so pixel i covers [i - 0.5, i + 0.5]. Crop boxes are given as
(x1, y1, x2, y2) in the same continuous coordinates of pixel *edges* (a full 640x480 image is
(-0.5, -0.5, 639.5, 479.5)). A crop is an affine map A of pixel coordinates; the cropped camera is
K' = A K, so renderers crop by changing K and images are resampled with the same A
(cv2.warpAffine, :func:`warp_affine`) - the two always agree. Torch functions for networks and losses;
:func:`project_posed` and :func:`warp_affine` are the numpy/OpenCV ones for images and evaluation.
"""

from __future__ import annotations

import typing

import numpy as np

if typing.TYPE_CHECKING:  # torch is imported where a torch function runs: the numpy half needs none
    import torch


def project_points(points_cam: torch.Tensor, K: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Camera-frame points [...,N,3] and K [...,3,3] -> pixels [...,N,2]."""
    homogeneous = points_cam @ K.transpose(-1, -2)
    return homogeneous[..., :2] / homogeneous[..., 2:3].clamp_min(eps)


def backproject(pixels: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixels [...,N,2] with depth [...,N] (metres, along z) -> camera points [...,N,3]."""
    import torch

    ones = torch.ones_like(pixels[..., :1])
    rays = torch.cat([pixels, ones], dim=-1) @ torch.linalg.inv(K).transpose(-1, -2)
    return rays * depth.unsqueeze(-1)


def crop_affine(box: torch.Tensor, out_width: int, out_height: int) -> torch.Tensor:
    """Boxes [...,4] (x1, y1, x2, y2, pixel-edge coordinates) -> 3x3 maps into an out_h x out_w crop.

    Edge coordinates map linearly: x1 -> -0.5 and x2 -> out_width - 0.5.
    """
    import torch

    x1, y1, x2, y2 = box.unbind(-1)
    scale_x = out_width / (x2 - x1)
    scale_y = out_height / (y2 - y1)
    affine = torch.zeros(*box.shape[:-1], 3, 3, dtype=box.dtype, device=box.device)
    affine[..., 0, 0] = scale_x
    affine[..., 0, 2] = -0.5 - scale_x * x1
    affine[..., 1, 1] = scale_y
    affine[..., 1, 2] = -0.5 - scale_y * y1
    affine[..., 2, 2] = 1.0
    return affine


def crop_intrinsics(K: torch.Tensor, box: torch.Tensor, out_width: int, out_height: int) -> torch.Tensor:
    """The intrinsics of the crop: K' = A K."""
    return crop_affine(box, out_width, out_height) @ K


def uncrop_pixels(pixels_in_crop: torch.Tensor, box: torch.Tensor, out_width: int, out_height: int) -> torch.Tensor:
    """Crop pixels [...,N,2] back to full-image pixels (exact inverse of the crop map)."""
    import torch

    affine = crop_affine(box, out_width, out_height)
    scale = torch.stack([affine[..., 0, 0], affine[..., 1, 1]], dim=-1).unsqueeze(-2)
    offset = torch.stack([affine[..., 0, 2], affine[..., 1, 2]], dim=-1).unsqueeze(-2)
    return (pixels_in_crop - offset) / scale


def square_box_around(center: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Square boxes [...,4] of side ``size`` [...] centred on ``center`` [...,2] (pixel coordinates)."""
    import torch

    half = size.unsqueeze(-1) / 2
    return torch.cat([center - half, center + half], dim=-1)


def zoom_in_box(
    center: torch.Tensor, bbox_xyxy: torch.Tensor, aspect: float = 4.0 / 3.0, padding: float = 1.4
) -> torch.Tensor:
    """DeepIM's zoom-in window (deepim sec. 3.1): centred on the object's projected centre,
    enclosing the box with ``padding`` and keeping the output aspect ratio (width / height)."""
    import torch

    half_w = torch.maximum((bbox_xyxy[..., 2] - center[..., 0]).abs(), (center[..., 0] - bbox_xyxy[..., 0]).abs())
    half_h = torch.maximum((bbox_xyxy[..., 3] - center[..., 1]).abs(), (center[..., 1] - bbox_xyxy[..., 1]).abs())
    half_w = torch.maximum(half_w, half_h * aspect) * padding
    half_h = half_w / aspect
    return torch.stack(
        [center[..., 0] - half_w, center[..., 1] - half_h, center[..., 0] + half_w, center[..., 1] + half_h], dim=-1
    )


def project_posed(points, K, R, t) -> tuple[np.ndarray, np.ndarray]:
    """numpy: object points [N,3] posed by (R [3,3], t [3]) (or batched R [...,3,3], t [...,3]) seen through
    K [3,3] (or batched K [...,3,3], broadcast against R) -> (pixels [...,N,2] in this module's convention,
    camera depths [...,N]); points at or behind the camera plane give inf / nan pixels (callers check the
    depths)."""
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64)
    cam = np.matmul(np.asarray(points, np.float64), np.swapaxes(R, -1, -2)) + t[..., None, :]
    uvw = np.matmul(cam, np.swapaxes(np.asarray(K, np.float64), -1, -2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return uvw[..., :2] / uvw[..., 2:3], cam[..., 2]


def warp_affine(image: np.ndarray, affine, width: int, height: int, nearest: bool = False, border_value=0,
                inverse: bool = False) -> np.ndarray:
    """numpy/OpenCV: resample ``image`` [H,W(,C)] with the pixel map ``affine`` (2x3 or 3x3, e.g.
    :func:`crop_affine`) into [height,width(,C)]: output pixel p takes the input at A^-1 p (``inverse``: the
    map goes the other way, output p takes the input at A p: pasting a crop back); outside the input is
    ``border_value``; bilinear, or ``nearest`` for label maps."""
    import cv2

    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    if inverse:
        flags |= cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(image, np.asarray(affine, np.float64)[:2], (int(width), int(height)), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)
