"""Keypoints on the object surface: farthest point sampling plus the centre (dsc-posenet sec. 3.2,
as in PVNet), computed once per mesh and cached on disk."""

from __future__ import annotations

import hashlib
import os
import tempfile

import numpy as np

from .mesh import ObjectMesh


def farthest_point_sampling(points: np.ndarray, count: int, start: np.ndarray) -> np.ndarray:
    """Greedy FPS: each new point is the one farthest from all chosen ones, seeded from ``start``
    (the object centre, so the first keypoint is the surface point farthest from it)."""
    if count > len(points):
        raise ValueError(f"cannot pick {count} keypoints from {len(points)} points")
    distance = np.linalg.norm(points - start, axis=1)
    chosen = []
    for _ in range(count):
        index = int(np.argmax(distance))
        chosen.append(index)
        distance = np.minimum(distance, np.linalg.norm(points - points[index], axis=1))
    return points[chosen]


def default_cache_dir() -> str:
    return os.environ.get("DSC_POSE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "dsc_pose"))


def object_keypoints(mesh: ObjectMesh, count: int = 8, cache_dir: str | None = None) -> np.ndarray:
    """[count + 1, 3] metres: ``count`` FPS surface keypoints, then the bounding-box centre last."""
    cache_dir = os.path.join(cache_dir or default_cache_dir(), "keypoints")
    digest = hashlib.sha256(np.ascontiguousarray(mesh.vertices).tobytes()).hexdigest()[:24]
    cache_path = os.path.join(cache_dir, f"{digest}_fps{count}.npy")
    if os.path.isfile(cache_path):
        cached = np.load(cache_path, allow_pickle=False)
        if cached.shape == (count + 1, 3):
            return cached
    center = mesh.bbox_center
    keypoints = np.vstack([farthest_point_sampling(mesh.vertices, count, center), center])
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npy", delete=False) as tmp:
        np.save(tmp, keypoints)
    os.replace(tmp.name, cache_path)
    return keypoints
