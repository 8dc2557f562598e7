"""Point matching loss (deepim eq. 4), symmetry-aware."""

from __future__ import annotations

import torch

from ..geometry.se3 import transform_points


def point_matching_loss(rot_pred: torch.Tensor, trans_pred: torch.Tensor, rot_gt: torch.Tensor,
                        trans_gt: torch.Tensor, points: torch.Tensor,
                        symmetries: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """eq. (4): (1/n) sum_j || (R x_j + t) - (R^ x_j + t^) ||_1, per sample [B].

    ``points`` [B,n,3] or [n,3] (DeepIM samples 3,000 model points). For symmetric objects the
    ground truth is replaced by its closest symmetric equivalent (R_gt R_s, R_gt t_s + t_gt), given
    ``symmetries`` = (R_s [S,3,3], t_s [S,3]) including the identity.
    """
    predicted = transform_points(rot_pred, trans_pred, points)  # [B,n,3]
    if symmetries is None:
        return (predicted - transform_points(rot_gt, trans_gt, points)).abs().sum(-1).mean(-1)
    sym_rot, sym_trans = symmetries
    rot_equivalent = rot_gt.unsqueeze(1) @ sym_rot  # [B,S,3,3]
    trans_equivalent = (rot_gt.unsqueeze(1) @ sym_trans.unsqueeze(-1)).squeeze(-1) + trans_gt.unsqueeze(1)
    target = transform_points(rot_equivalent, trans_equivalent, points.unsqueeze(-3) if points.dim() == 3 else points)
    per_symmetry = (predicted.unsqueeze(1) - target).abs().sum(-1).mean(-1)  # [B,S]
    return per_symmetry.min(dim=1).values
