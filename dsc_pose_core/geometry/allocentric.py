"""Allocentric <-> egocentric rotations.

A ROI crop shows the object as seen along the ray through its centre, so what a network can read
from the crop is the rotation relative to that ray (allocentric), not to the optical axis
(egocentric): the same object at the same egocentric rotation looks rotated when it moves across the
image. R_ego = R_ray R_allo, with R_ray the smallest rotation taking the optical axis (0, 0, 1) to
the ray direction t / |t| (Kundu et al., 3D-RCNN, CVPR 2018, used by ROI-10D-style regressors).
"""

from __future__ import annotations

import torch


def ray_rotation(translation: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """[...,3] -> [...,3,3]: rotation about axis z x ray by the angle between the optical axis and the ray."""
    ray = translation / translation.norm(dim=-1, keepdim=True).clamp_min(eps)
    z_axis = torch.zeros_like(ray)
    z_axis[..., 2] = 1.0
    axis = torch.cross(z_axis, ray, dim=-1)
    sin = axis.norm(dim=-1, keepdim=True)
    cos = ray[..., 2:3]
    axis = axis / sin.clamp_min(eps)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*x.shape, 3, 3)
    eye = torch.eye(3, dtype=translation.dtype, device=translation.device).expand_as(skew)
    # Rodrigues: I + sin K + (1 - cos) K^2; at sin = 0 the axis is zero and this is I
    return eye + sin[..., None] * skew + (1.0 - cos)[..., None] * (skew @ skew)


def allocentric_to_egocentric(rotation_allo: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    return ray_rotation(translation) @ rotation_allo


def egocentric_to_allocentric(rotation_ego: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    return ray_rotation(translation).transpose(-1, -2) @ rotation_ego
