"""Batched rotation conversions in torch (quaternions are w, x, y, z).

Thin wrappers over ``roma`` (which uses x, y, z, w quaternions) so the whole package shares one
quaternion order; tests check them against scipy.
"""

from __future__ import annotations

import roma
import torch


def quaternion_to_matrix(quat_wxyz: torch.Tensor) -> torch.Tensor:
    """[...,4] (normalised inside) -> [...,3,3]."""
    quat_xyzw = torch.cat([quat_wxyz[..., 1:], quat_wxyz[..., :1]], dim=-1)
    return roma.unitquat_to_rotmat(roma.quat_normalize(quat_xyzw))


def matrix_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """[...,3,3] -> [...,4] unit quaternion with w >= 0."""
    quat_xyzw = roma.rotmat_to_unitquat(rotation)
    quat_wxyz = torch.cat([quat_xyzw[..., 3:], quat_xyzw[..., :3]], dim=-1)
    return torch.where(quat_wxyz[..., :1] < 0, -quat_wxyz, quat_wxyz)


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """[...,3] rotation vector (axis * angle, radians) -> [...,3,3]."""
    return roma.rotvec_to_rotmat(rotvec)


def matrix_to_axis_angle(rotation: torch.Tensor) -> torch.Tensor:
    return roma.rotmat_to_rotvec(rotation)


def rotation_6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """[...,6] = first two columns of R stacked (Zhou et al., CVPR 2019) -> [...,3,3]."""
    two_columns = torch.stack([rot6d[..., 0:3], rot6d[..., 3:6]], dim=-1)
    return roma.special_gramschmidt(two_columns)


def matrix_to_rotation_6d(rotation: torch.Tensor) -> torch.Tensor:
    return torch.cat([rotation[..., :, 0], rotation[..., :, 1]], dim=-1)


def rotation_angle_between(rot_a: torch.Tensor, rot_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle (radians) between rotations, [...]."""
    relative = rot_a.transpose(-1, -2) @ rot_b
    cos = ((relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.arccos(cos)


def nearest_rotation(matrix: torch.Tensor) -> torch.Tensor:
    """The rotation closest to a 3x3 matrix [...,3,3] in Frobenius norm (special Procrustes), e.g. to
    clean BOP ground truth, whose rotations are orthonormal only to ~5e-4."""
    return roma.special_procrustes(matrix)
