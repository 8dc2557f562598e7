"""The box initialiser: a coarse initial pose from a 2D box alone (no network; the pipeline's ``box``).

Translation: the object origin is put on the ray through the box centre, t = z K^-1 [c_x, c_y, 1],
so the projected model origin lands exactly on the box centre. The depth z is chosen so that the
projected model (its vertices' box, pixel edges: ``data.boxes.projected_box``) has the size of the detection box: z starts at
f * diameter / box diagonal and is rescaled by sqrt(area_projected / area_box) (the projected size
scales as 1/z) a few times.

Rotation: a box carries no orientation beyond its aspect ratio. ``BoxInitConfig.n_templates = 0``
(default) uses the canonical rotation ``rotation`` (identity unless given); with n_templates > 0 a
set of viewpoints (Fibonacci sphere x in-plane angles) is scored by the IoU between the detection
box and the template's projected box after the same centre/scale fit (a box-only stand-in for the
mask IoU: no mask is observed), and the best one is kept. No image is rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .data.boxes import box_iou_xyxy, projected_box


@dataclass(frozen=True)
class BoxInitConfig:
    n_templates: int = 0  # 0: canonical rotation only
    n_inplane: int = 4  # in-plane angles per template viewpoint
    fit_iterations: int = 5


def _look_at(direction: np.ndarray, inplane: float) -> np.ndarray:
    """Rotation (object -> camera) that shows the object seen from ``direction`` (unit, object frame)."""
    z = -direction / np.linalg.norm(direction)  # camera z axis in the object frame points at the object
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.95 else np.array([0.0, 1.0, 0.0])
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R_c2o = np.stack([x, y, z], axis=1)
    c, s = math.cos(inplane), math.sin(inplane)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return Rz @ R_c2o.T


def template_rotations(n_views: int, n_inplane: int) -> list[np.ndarray]:
    golden = math.pi * (3.0 - math.sqrt(5.0))
    out = []
    for i in range(n_views):
        zc = 1.0 - 2.0 * (i + 0.5) / n_views
        r = math.sqrt(max(0.0, 1.0 - zc * zc))
        d = np.array([r * math.cos(golden * i), r * math.sin(golden * i), zc])
        for k in range(max(1, n_inplane)):
            out.append(_look_at(d, 2.0 * math.pi * k / max(1, n_inplane)))
    return out


def fit_translation(box, K, vertices, R, diameter: float | None = None, iterations: int = 5) -> np.ndarray:
    """t on the box-centre ray with the projected size of the model matching the box size."""
    K = np.asarray(K, dtype=np.float64)
    x1, y1, x2, y2 = [float(v) for v in box]
    center = np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0, 1.0])
    ray = np.linalg.solve(K, center)
    ray /= ray[2]
    box_size = math.sqrt(max(x2 - x1, 1e-3) * max(y2 - y1, 1e-3))
    if diameter is None:
        diameter = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
    f = math.sqrt(K[0, 0] * K[1, 1])
    z = f * diameter / math.hypot(x2 - x1, y2 - y1)
    z = max(z, 1e-3)
    for _ in range(max(1, iterations)):
        pb = projected_box(vertices, R, z * ray, K)
        if pb is None:  # the model reaches behind the camera at this distance: keep it
            break
        size = math.sqrt(max(pb[2] - pb[0], 1e-6) * max(pb[3] - pb[1], 1e-6))
        z = z * size / box_size
    return z * ray


def box_initial_pose(box, K, vertices: np.ndarray, config: BoxInitConfig = BoxInitConfig(),
                     rotation: np.ndarray | None = None, diameter: float | None = None):
    """(R [3,3], t [3]) from a detection box (x1, y1, x2, y2, pixels) and intrinsics K."""
    vertices = np.asarray(vertices, dtype=np.float64)
    candidates = [np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)]
    if config.n_templates > 0:
        candidates += template_rotations(config.n_templates, config.n_inplane)
    best = None
    for R in candidates:
        t = fit_translation(box, K, vertices, R, diameter, config.fit_iterations)
        pb = projected_box(vertices, R, t, K)
        score = 0.0 if pb is None else box_iou_xyxy(pb, box)
        if best is None or score > best[0] + 1e-9:
            best = (score, R, t)
    return best[1], best[2]
