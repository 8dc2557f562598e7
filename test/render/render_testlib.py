"""Helpers for the renderer tests: LM-O meshes and scene ground truth (val split only)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from dsc_pose_core.geometry import nearest_rotation
from dsc_pose_core.objects import load_mesh

SCENE = "test/000002"
LMO_OBJECTS = (1, 5, 6, 8, 9, 10, 11, 12)


@lru_cache(maxsize=None)
def _mesh(root: str, obj_id: int):
    return load_mesh(Path(root) / "models" / f"obj_{obj_id:06d}.ply")


@lru_cache(maxsize=None)
def _decimated(root: str, obj_id: int, faces: int):
    return _mesh(root, obj_id).decimated(faces)


def _rotation(values, orthonormal):
    matrix = np.asarray(values, dtype=np.float64).reshape(3, 3)
    return nearest_rotation(torch.from_numpy(matrix)).numpy() if orthonormal else matrix


class LmoScene:
    """Ground truth of LM-O scene 2 (metres), restricted to the ``val`` split."""

    def __init__(self, root: Path):
        self.root = root
        scene = root / SCENE
        self.gt = json.loads((scene / "scene_gt.json").read_text())
        self.info = json.loads((scene / "scene_gt_info.json").read_text())
        self.camera = json.loads((scene / "scene_camera.json").read_text())
        self.val_ids = list(json.loads((root / "splits.json").read_text())["val"])

    def K(self, im_id: int) -> np.ndarray:
        return np.asarray(self.camera[str(im_id)]["cam_K"], dtype=np.float64).reshape(3, 3)

    def poses(self, im_id: int, orthonormal: bool = True):
        """[(obj_id, R, t metres), ...] in scene_gt order (= scene_gt_info order). LM-O's rotations
        are orthonormal only to ~5e-4 (det up to 1.0006), enough to hide ~2 deg in an arccos-based
        angle error, so they are projected onto SO(3) unless ``orthonormal`` is False (BOP rendered
        its scene_gt_info boxes from the raw matrices)."""
        return [(int(g["obj_id"]), _rotation(g["cam_R_m2c"], orthonormal),
                 np.asarray(g["cam_t_m2c"], float) / 1000.0) for g in self.gt[str(im_id)]]

    def bbox_visib(self, im_id: int) -> np.ndarray:
        return np.asarray([i["bbox_visib"] for i in self.info[str(im_id)]], dtype=np.float64)

    def mesh(self, obj_id: int):
        return _mesh(str(self.root), obj_id)

    def decimated(self, obj_id: int, faces: int):
        return _decimated(str(self.root), obj_id, faces)


def box_iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of BOP boxes (x, y, w, h) taken as the continuous rectangles [x, x + w] x [y, y + h]."""
    ax2, ay2 = a[..., 0] + a[..., 2], a[..., 1] + a[..., 3]
    bx2, by2 = b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def crop_around(K: np.ndarray, t: np.ndarray, half: float, size: int) -> np.ndarray:
    """The intrinsics of a size x size crop of half-width ``half`` px centred on t's projection."""
    import torch

    from dsc_pose_core.geometry import crop_intrinsics

    c = K @ t
    c = c[:2] / c[2]
    box = torch.tensor([c[0] - half, c[1] - half, c[0] + half, c[1] + half], dtype=torch.float64)
    return crop_intrinsics(torch.as_tensor(K, dtype=torch.float64), box, size, size).numpy()
