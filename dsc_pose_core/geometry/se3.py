"""Rigid transforms (R, t) mapping object -> camera, batched in torch."""

from __future__ import annotations

import torch


def to_matrix(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """([...,3,3], [...,3]) -> [...,4,4]."""
    shape = rotation.shape[:-2]
    matrix = torch.zeros(*shape, 4, 4, dtype=rotation.dtype, device=rotation.device)
    matrix[..., :3, :3] = rotation
    matrix[..., :3, 3] = translation
    matrix[..., 3, 3] = 1.0
    return matrix


def from_matrix(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return matrix[..., :3, :3], matrix[..., :3, 3]


def compose(rot_a, trans_a, rot_b, trans_b):
    """(a o b): apply b first, then a."""
    return rot_a @ rot_b, (rot_a @ trans_b.unsqueeze(-1)).squeeze(-1) + trans_a


def invert(rotation, translation):
    rot_inv = rotation.transpose(-1, -2)
    return rot_inv, -(rot_inv @ translation.unsqueeze(-1)).squeeze(-1)


def transform_points(rotation: torch.Tensor, translation: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Points [...,N,3] in the object frame -> camera frame [...,N,3]."""
    return points @ rotation.transpose(-1, -2) + translation.unsqueeze(-2)


def matrix_to_quaternion_xyzw(rotation) -> "np.ndarray":
    """[3,3] rotation (numpy; orthonormalised first) -> unit quaternion (x, y, z, w), the order of
    geometry_msgs/Quaternion and scipy. Estimated rotations may drift from SO(3) by ~1e-6."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    matrix = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    u, _, vt = np.linalg.svd(matrix)
    matrix = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    return Rotation.from_matrix(matrix).as_quat()


def quaternion_xyzw_to_matrix(quaternion) -> "np.ndarray":
    """Unit quaternion (x, y, z, w) -> [3,3] rotation (numpy)."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    return Rotation.from_quat(np.asarray(quaternion, dtype=np.float64).reshape(4)).as_matrix()
