"""Drawing poses over images (numpy/OpenCV; images are uint8 RGB [H,W,3], drawn in place).

- :func:`draw_box3d`: the object's 3D bounding box (mesh extents) projected with K, R, t.
- :func:`draw_contour`: the outline of a silhouette (``cv2.findContours`` on a rendered mask).
- :func:`draw_poses`: both for a list of poses, silhouettes from the fast renderer, optional masks.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..geometry.camera import project_posed

GT_COLOR = (0, 230, 0)  # RGB: ground truth
EST_COLOR = (255, 0, 255)  # RGB: estimates


def box_edges() -> list[tuple[int, int]]:
    """The 12 edges of a box whose corner i has (x, y, z) bits (i>>2 & 1, i>>1 & 1, i & 1)
    (the order of ``ObjectMesh.bbox_corners``)."""
    return [(i, j) for i in range(8) for j in range(i + 1, 8) if bin(i ^ j).count("1") == 1]


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def draw_box3d(image: np.ndarray, K, R, t, corners: np.ndarray, color=GT_COLOR, thickness: int = 2) -> bool:
    """Draw the projected 3D box (8 corners [8,3] metres); False (nothing drawn) if behind the camera."""
    uv, z = project_posed(corners, K, R, t)
    if not (z > 1e-6).all() or not np.isfinite(uv).all() or np.abs(uv).max() > 1e5:
        return False
    for i, j in box_edges():
        cv2.line(image, _pt(uv[i]), _pt(uv[j]), color, thickness, cv2.LINE_AA)
    return True


def draw_contour(image: np.ndarray, mask: np.ndarray, color=GT_COLOR, thickness: int = 2) -> int:
    """Draw the outline(s) of a boolean mask; returns the number of contours.

    Where a silhouette is cut by the image border, the border itself is not drawn (it is not an
    edge of the object): contours are split into open polylines there.
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    H, W = mask.shape
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    for contour in contours:
        pts = contour.reshape(-1, 2)
        on_border = (pts[:, 0] == 0) | (pts[:, 0] == W - 1) | (pts[:, 1] == 0) | (pts[:, 1] == H - 1)
        if not on_border.any():
            cv2.polylines(image, [pts.reshape(-1, 1, 2)], True, color, thickness, cv2.LINE_AA)
            continue
        start = int(np.argmax(on_border))  # walk the closed contour from a border point
        pts, on_border = np.roll(pts, -start, axis=0), np.roll(on_border, -start)
        run: list = []  # a border point, inner points, a border point
        for p, border in zip(np.vstack([pts, pts[:1]]), np.append(on_border, True)):
            if border:
                if len(run) >= 2:  # holds inner points: draw it, ending at this border point
                    run.append(p)
                    cv2.polylines(image, [np.asarray(run, np.int32).reshape(-1, 1, 2)], False, color, thickness,
                                  cv2.LINE_AA)
                run = [p]
            else:
                run.append(p)
    return len(contours)


def blend_mask(image: np.ndarray, mask: np.ndarray, color=GT_COLOR, alpha: float = 0.35) -> None:
    """Tint the pixels of ``mask`` with ``color``."""
    m = np.asarray(mask, bool)
    if m.any():
        tint = np.asarray(color, np.float32)
        image[m] = np.clip(image[m].astype(np.float32) * (1 - alpha) + tint * alpha, 0, 255).astype(np.uint8)


def draw_legend(image: np.ndarray, entries: Sequence[tuple[str, tuple[int, int, int]]], origin=(8, 8)) -> None:
    """Small coloured labels in the top-left corner (on a dark box for contrast)."""
    x, y = origin
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    for text, color in entries:
        (w, h), base = cv2.getTextSize(text, font, scale, thick)
        cv2.rectangle(image, (x - 3, y - 3), (x + w + 3, y + h + base + 1), (0, 0, 0), -1)
        cv2.putText(image, text, (x, y + h), font, scale, color, thick, cv2.LINE_AA)
        y += h + base + 8


def draw_poses(image: np.ndarray, K, poses: Sequence[tuple[int, np.ndarray, np.ndarray]], renderer, corners: dict,
               color=GT_COLOR, box: bool = True, contour: bool = True, mask: bool = False, label: bool = True,
               thickness: int = 2) -> list[np.ndarray]:
    """Draw each (obj_id, R, t) over ``image`` (uint8 RGB, modified in place).

    ``renderer``: a :class:`~dsc_pose_core.render.FastRenderer` holding the objects (needed for
    contours and masks; may be None to draw boxes only); ``corners``: {obj_id: [8,3] box corners}.
    Each object's silhouette is rendered alone (its whole outline, also where another object hides it).
    Returns the silhouettes (bool [H,W]) in the order of ``poses``.
    """
    H, W = image.shape[:2]
    silhouettes = []
    for obj_id, R, t in poses:
        sil = np.zeros((H, W), bool)
        if renderer is not None and (contour or mask) and float(np.asarray(t).reshape(3)[2]) > 0:
            sil = renderer.render(K, [(int(obj_id), R, t)], width=W, height=H, rgb=False).instance > 0
        silhouettes.append(sil)
        if mask:
            blend_mask(image, sil, color)
    for (obj_id, R, t), sil in zip(poses, silhouettes):
        if contour:
            draw_contour(image, sil, color, thickness)
        if box and obj_id in corners:
            draw_box3d(image, K, R, t, corners[obj_id], color, max(1, thickness - 1))
        if label:
            uv, z = project_posed(np.zeros((1, 3)), K, R, t)
            if z[0] > 0 and np.isfinite(uv).all() and 0 <= uv[0, 0] < W and 0 <= uv[0, 1] < H:
                cv2.putText(image, str(int(obj_id)), _pt(uv[0] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1,
                            cv2.LINE_AA)
    return silhouettes


def draw_axes(image: np.ndarray, K, R, t, length: float, thickness: int = 2) -> bool:
    """Object axes (x red, y green, z blue; ``length`` in metres) at pose (R, t) over ``image``
    (uint8 RGB, in place). False when the origin is behind the camera."""
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    if t[2] <= 0 or not (np.isfinite(R).all() and np.isfinite(t).all()):
        return False
    points = np.array([[0, 0, 0], [length, 0, 0], [0, length, 0], [0, 0, length]], dtype=np.float64)
    uv, z = project_posed(points, K, R, t)
    if (z <= 0).any() or not np.isfinite(uv).all():
        return False
    for end, color in zip(uv[1:], ((255, 0, 0), (0, 255, 0), (0, 0, 255))):
        cv2.line(image, _pt(uv[0]), _pt(end), color, thickness, cv2.LINE_AA)
    return True
