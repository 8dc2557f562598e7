"""Pose refinement by gradient descent on a silhouette loss through the differentiable renderer.

A small, generic tool (render-and-compare on masks). It checks that the renderer's gradients point
the right way, and it can polish a pose against an observed mask; the papers' own losses live in
:mod:`dsc_pose_core.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..geometry.rotations import axis_angle_to_matrix
from .differentiable import DifferentiableRenderer


def dice_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - 2 |P * T| / (|P| + |T|) per image ([B,H,W] -> [B])."""
    dims = tuple(range(1, prediction.dim()))
    overlap = (prediction * target).sum(dims)
    return 1.0 - 2.0 * overlap / (prediction.sum(dims) + target.sum(dims) + eps)


@dataclass
class SilhouetteFit:
    R: torch.Tensor  # [B,3,3]
    t: torch.Tensor  # [B,3]
    losses: list = field(default_factory=list)  # per step, [B] each


def fit_pose_to_silhouette(renderer: DifferentiableRenderer, K, obj_id: int, R0, t0, target: torch.Tensor,
                           width: int, height: int, steps: int = 50, lr_rotation: float = 0.02,
                           lr_translation: float = 0.004, depth_scale: float = 5.0) -> SilhouetteFit:
    """Adam on a Dice loss between the soft silhouette and ``target`` [B,H,W] (values in [0, 1]).

    The rotation is updated as R = exp([w]) R0 (w in the camera frame, radians), the translation
    as t = t0 + (dx, dy, depth_scale * dz) in metres (the silhouette constrains depth more weakly
    than x/y, so the z step is larger).
    """
    R0 = torch.as_tensor(R0, dtype=torch.float32).reshape(-1, 3, 3)
    t0 = torch.as_tensor(t0, dtype=torch.float32).reshape(-1, 3)
    target = torch.as_tensor(target, dtype=torch.float32)
    rotvec = torch.zeros(R0.shape[0], 3, requires_grad=True)
    delta = torch.zeros(R0.shape[0], 3, requires_grad=True)
    scale = torch.tensor([1.0, 1.0, depth_scale])
    optimizer = torch.optim.Adam([{"params": [rotvec], "lr": lr_rotation},
                                  {"params": [delta], "lr": lr_translation}])
    losses = []

    def pose():
        return axis_angle_to_matrix(rotvec) @ R0, t0 + delta * scale

    for _ in range(steps):
        optimizer.zero_grad()
        R, t = pose()
        loss = dice_loss(renderer.silhouette(K, obj_id, R, t, width, height), target)
        loss.sum().backward()
        optimizer.step()
        losses.append(loss.detach())
    with torch.no_grad():
        R, t = pose()
    return SilhouetteFit(R.detach(), t.detach(), losses)
