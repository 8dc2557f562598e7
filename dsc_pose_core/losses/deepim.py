"""DeepIM's training loss (deepim eq. 5): L = alpha L_pose + beta L_flow + gamma L_mask,
alpha = 0.1, beta = 0.25, gamma = 0.03 ("throughout the experiments", sec. 4.1).

L_pose is the point matching loss (eq. 4, ``losses.point_matching``; symmetric objects compare
against the closest symmetric equivalent of the ground truth) between the estimate after applying
the predicted untangled transform (eq. 1-3, ``geometry.untangled.apply_untangled``; f_x = f_y = 1
as in sec. 3.3, or the zoomed-in camera's focal lengths ``focal``, see ``deepim.inputs``) and the
target pose. L_flow is FlowNet's end-point error over the valid pixels;
L_mask the sigmoid cross-entropy of the observed foreground mask (sec. 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry.untangled import apply_untangled
from .point_matching import point_matching_loss


@dataclass(frozen=True)
class DeepImLossWeights:
    pose: float = 0.1  # alpha, eq. (5)
    flow: float = 0.25  # beta
    mask: float = 0.03  # gamma


def pose_loss_grouped(rot_pred, trans_pred, rot_gt, trans_gt, obj_ids, points: dict, symmetries: dict):
    """Per-sample point matching loss [B] for a batch mixing objects (each with its own points and
    symmetry set)."""
    losses = torch.zeros(len(obj_ids), dtype=rot_pred.dtype, device=rot_pred.device)
    ids = torch.as_tensor(list(obj_ids))
    for obj in sorted(set(int(o) for o in obj_ids)):
        idx = torch.nonzero(ids == obj).flatten().to(rot_pred.device)
        sym = symmetries.get(obj)
        losses = losses.index_put((idx,), point_matching_loss(rot_pred[idx], trans_pred[idx], rot_gt[idx],
                                                              trans_gt[idx], points[obj], sym))
    return losses


def flow_epe(flow_pred: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean end-point error over valid pixels (0 when none is valid)."""
    epe = (flow_pred - flow_gt).norm(dim=1)  # [B,H,W]
    valid = valid.to(epe.dtype)
    return (epe * valid).sum() / valid.sum().clamp_min(1.0)


def deepim_loss(outputs: dict, rot_src, trans_src, rot_gt, trans_gt, obj_ids, points, symmetries,
                weights: DeepImLossWeights = DeepImLossWeights(), flow_gt=None, flow_valid=None, mask_gt=None,
                focal=None):
    """Returns (total, {"pose", "flow", "mask"} detached terms, (R_new, t_new) the updated poses).
    ``focal`` [B,2]: eq. (3)'s (f_x, f_y) per sample; None = 1."""
    fx, fy = (1.0, 1.0) if focal is None else (focal[:, 0], focal[:, 1])
    rot_new, trans_new = apply_untangled(rot_src, trans_src, outputs["rot"], outputs["trans"], fx, fy)
    pose = pose_loss_grouped(rot_new, trans_new, rot_gt, trans_gt, obj_ids, points, symmetries).mean()
    total = weights.pose * pose
    terms = {"pose": pose.detach()}
    if weights.flow > 0 and flow_gt is not None and "flow" in outputs:
        flow = flow_epe(outputs["flow"], flow_gt, flow_valid)
        total = total + weights.flow * flow
        terms["flow"] = flow.detach()
    if weights.mask > 0 and mask_gt is not None and "mask" in outputs:
        mask = F.binary_cross_entropy_with_logits(outputs["mask"][:, 0], mask_gt.to(outputs["mask"].dtype))
        total = total + weights.mask * mask
        terms["mask"] = mask.detach()
    return total, terms, (rot_new, trans_new)
