"""2D boxes: loosening ground-truth boxes as the weak labels of DSC-PoseNet, and clipping.

Boxes are (x, y, w, h) in integer pixels like BOP's bbox_visib, or (x1, y1, x2, y2) pixel-edge
coordinates (see geometry.camera) where said.
"""

from __future__ import annotations

import numpy as np

from ..geometry.camera import project_posed

# dsc-posenet sec. 4.1: "randomly expanding them up to 15% of their sizes"
DEFAULT_MAX_LOOSENING = 0.15


def loosen_box_xywh(box_xywh, rng: np.random.Generator, width: int, height: int,
                    max_fraction: float = DEFAULT_MAX_LOOSENING) -> np.ndarray:
    """Expand each side of a box independently by U(0, max_fraction) of the box's size on that
    axis, clipped to the image. Returns an integer (x, y, w, h)."""
    x, y, w, h = (float(v) for v in box_xywh)
    left, right = rng.uniform(0.0, max_fraction, 2) * w
    top, bottom = rng.uniform(0.0, max_fraction, 2) * h
    x1, y1 = max(0.0, np.floor(x - left)), max(0.0, np.floor(y - top))
    x2, y2 = min(float(width), np.ceil(x + w + right)), min(float(height), np.ceil(y + h + bottom))
    return np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.int64)


def box_xyxy_edges(box_xywh) -> np.ndarray:
    """An integer-pixel (x, y, w, h) box -> pixel-edge (x1, y1, x2, y2) (pixel centres at integers)."""
    x, y, w, h = (float(v) for v in box_xywh)
    return np.array([x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5])


def box_mask(box_xyxy, width: int, height: int) -> np.ndarray:
    """Boolean [H,W] image, True at the pixels whose centres lie inside the pixel-edge box ``box_xyxy``
    (an integer (x, y, w, h) box: ``box_mask(box_xyxy_edges(box), ...)``, its w x h pixels)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    return ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]


def mask_box_xywh(mask: np.ndarray) -> np.ndarray | None:
    """Tight (x, y, w, h) of a boolean mask, None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], dtype=np.int64)


def mask_box_bop(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> tuple[int, int, int, int]:
    """The box of a mask as BOP files hold it (the BOP toolkit's ``calc_2d_bbox``): [x, y, x_max - x_min,
    y_max - y_min], one pixel narrower than :func:`mask_box_xywh`; [-1]*4 for an empty mask. Only for
    writing BOP ground truth (``scene_gt_info.json``) as the toolkit does; ``offset`` = image coordinates
    of the mask's pixel (0, 0)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (-1, -1, -1, -1)
    x0, y0 = int(xs.min()) + offset[0], int(ys.min()) + offset[1]
    return (x0, y0, int(xs.max() - xs.min()), int(ys.max() - ys.min()))


def mask_box_xyxy(mask: np.ndarray) -> np.ndarray | None:
    """Tightest box of a boolean mask as pixel-edge coordinates (x1, y1, x2, y2); None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5], dtype=np.float64)


def box_iou_xyxy(box_a, box_b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes (pixel edges)."""
    ax1, ay1, ax2, ay2 = (float(v) for v in box_a)
    bx1, by1, bx2, by2 = (float(v) for v in box_b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return float(inter / union) if union > 0 else 0.0


def box_iou_xywh(box_a, box_b) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = (float(v) for v in box_a)
    bx, by, bw, bh = (float(v) for v in box_b)
    return box_iou_xyxy((ax, ay, ax + aw, ay + ah), (bx, by, bx + bw, by + bh))


def projected_box(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray | None:
    """Box (pixel edges, unclipped) of model points projected with pose (R, t); None when a point is at or
    behind the camera plane.

    For a triangle mesh the extreme projected vertices bound the rendered silhouette, so this is the
    rendered mask's tight box (up to half a pixel and without clipping at the image border): the extreme
    pixel centres widened by half a pixel to their edges."""
    uv, z = project_posed(points, K, R, t)
    if not (z > 1e-6).all():
        return None
    return np.array([uv[:, 0].min() - 0.5, uv[:, 1].min() - 0.5, uv[:, 0].max() + 0.5, uv[:, 1].max() + 0.5])
