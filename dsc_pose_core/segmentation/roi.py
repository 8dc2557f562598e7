"""Regions of interest: square crops around (loosened) 2D boxes and the exact paste-back.

A ROI is a square window centred on the box, of side ``context * max(w, h)`` (context margin so the
network sees some background around the box), resampled to ``size x size`` with
:func:`dsc_pose_core.geometry.camera.crop_affine` and ``cv2.warpAffine``. Probabilities predicted on
the crop go back into the full image with the same affine map and ``WARP_INVERSE_MAP`` (the exact
inverse: full-image pixel p samples the crop at A p).

Boxes are BOP (x, y, w, h) in integer pixels (pixels x .. x + w - 1); windows are (x1, y1, x2, y2) in
pixel-edge coordinates (see ``geometry.camera``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..data.boxes import box_xyxy_edges
from ..geometry.camera import crop_affine, warp_affine


def roi_window(box_xywh, context: float = 1.2, shift=(0.0, 0.0), scale: float = 1.0) -> np.ndarray:
    """Square pixel-edge window (x1, y1, x2, y2) around a box: side ``context * scale * max(w, h)``,
    centre moved by ``shift`` (fractions of the side). The window may leave the image."""
    return roi_window_edges(box_xyxy_edges(box_xywh), context, shift, scale)


def roi_window_edges(box_xyxy, context: float = 1.2, shift=(0.0, 0.0), scale: float = 1.0) -> np.ndarray:
    """:func:`roi_window` of a pixel-edge (x1, y1, x2, y2) box."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    side = max(x2 - x1, y2 - y1, 2.0) * float(context) * float(scale)
    cx = 0.5 * (x1 + x2) + shift[0] * side
    cy = 0.5 * (y1 + y2) + shift[1] * side
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def window_affine(window_xyxy, size: int) -> np.ndarray:
    """2x3 float64 map from full-image pixels to crop pixels (``geometry.crop_affine``)."""
    affine = crop_affine(torch.as_tensor(np.asarray(window_xyxy, dtype=np.float64)), int(size), int(size))
    return affine[:2].numpy()


def crop(image: np.ndarray, window_xyxy, size: int, nearest: bool = False, border_value=0) -> np.ndarray:
    """Resample the window of ``image`` [H,W(,C)] into [size,size(,C)]; outside the image is
    ``border_value``. ``nearest`` for label maps."""
    return warp_affine(image, window_affine(window_xyxy, size), size, size, nearest, border_value)


def paste(crop_values: np.ndarray, window_xyxy, width: int, height: int, nearest: bool = False,
          border_value: float = 0.0) -> np.ndarray:
    """Inverse of :func:`crop`: values on the crop [S,S] back into a [height,width] image
    (bilinear; pixels outside the window get ``border_value``)."""
    size = crop_values.shape[0]
    if crop_values.shape[1] != size:
        raise ValueError(f"crop must be square, got {crop_values.shape}")
    return warp_affine(crop_values, window_affine(window_xyxy, size), width, height, nearest, border_value,
                       inverse=True)


def window_mask(window_xyxy, width: int, height: int) -> np.ndarray:
    """Bool [height,width]: pixels whose centre lies inside the window."""
    x1, y1, x2, y2 = window_xyxy
    xs = np.arange(width)
    ys = np.arange(height)
    return ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]


def window_box_xywh(window_xyxy) -> np.ndarray:
    """The pixels of :func:`window_mask` (centres inside the window) as an integer (x, y, w, h) box."""
    x1, y1, x2, y2 = window_xyxy
    first_x, first_y = math.ceil(x1), math.ceil(y1)
    return np.array([first_x, first_y, math.floor(x2) - first_x + 1, math.floor(y2) - first_y + 1])
