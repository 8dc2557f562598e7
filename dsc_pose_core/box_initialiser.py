"""The box initialiser: a coarse initial pose from a 2D box alone (no network; the pipeline's ``box``).

Translation: the object origin is put on the ray through the box centre, t = z K^-1 [c_x, c_y, 1],
so the projected model origin lands exactly on the box centre. The depth z is chosen so that the
projected model (its vertices' box) has the size of the detection box: z starts at
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


def _projected_box(vertices, R, t, K):
    cam = vertices @ R.T + t
    uv = cam @ K.T
    uv = uv[:, :2] / np.maximum(uv[:, 2:3], 1e-9)
    return np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])


def _box_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


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
        pb = _projected_box(vertices, R, z * ray, K)
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
        score = _box_iou(_projected_box(vertices, R, t, np.asarray(K, dtype=np.float64)), box)
        if best is None or score > best[0] + 1e-9:
            best = (score, R, t)
    return best[1], best[2]
