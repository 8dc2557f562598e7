"""DeepIM's training loss (deepim eq. 5): L = alpha L_pose + beta L_flow + gamma L_mask,
alpha = 0.1, beta = 0.25, gamma = 0.03 ("throughout the experiments", sec. 4.1).

L_pose is the point matching loss (eq. 4, ``losses.point_matching``; symmetric objects compare
against the closest symmetric equivalent of the ground truth) between the estimate after applying
the predicted untangled transform (eq. 1-3, ``geometry.untangled.apply_untangled``; f_x = f_y = 1
as in sec. 3.3, or the zoomed-in camera's focal lengths ``focal``, see ``deepim.inputs``) and the
target pose. L_flow is FlowNet's end-point error over the valid pixels;
L_mask the sigmoid cross-entropy of the observed foreground mask (sec. 4.1).

``disentangled`` (not in the paper): L_pose = w_rot PM(R_new, t_gt) + PM(R_gt, t_new), the point
matching loss of the updated rotation with the true translation plus that of the updated translation
with the true rotation (the disentangled form of CosyPose, Labbe et al. 2020, sec. 3.3). In the joint
form a translation error larger than the rotation's point displacement (the CPU configurations' 15 cm
depth noise against ~2 cm for 15 deg on a 10 cm object) dominates the loss and the gradient that reaches
the shared layers, and eq. (4)'s L1 residuals then share the translation error's sign, which shrinks the
rotation's own gradient (halved at 15 cm of depth error in test/deepim); the disentangled form keeps the
rotation's gradient whatever the translation error and lets its weight be set on its own (BENCHMARKS,
"DeepIM on a pretrained siamese encoder").
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
    disentangled: bool = False  # L_pose = rotation * PM(R_new, t_gt) + PM(R_gt, t_new) (see the module docstring)
    rotation: float = 1.0  # w_rot of the disentangled form


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
    with torch.set_grad_enabled(torch.is_grad_enabled() and not weights.disentangled):  # logged only then
        pose = pose_loss_grouped(rot_new, trans_new, rot_gt, trans_gt, obj_ids, points, symmetries).mean()
    terms = {"pose": pose.detach()}
    if weights.disentangled:
        rot_part = pose_loss_grouped(rot_new, trans_gt, rot_gt, trans_gt, obj_ids, points, symmetries).mean()
        trans_part = pose_loss_grouped(rot_gt, trans_new, rot_gt, trans_gt, obj_ids, points, symmetries).mean()
        total = weights.pose * (weights.rotation * rot_part + trans_part)
        terms.update({"pose_rot": rot_part.detach(), "pose_trans": trans_part.detach()})
    else:
        total = weights.pose * pose
    if weights.flow > 0 and flow_gt is not None and "flow" in outputs:
        flow = flow_epe(outputs["flow"], flow_gt, flow_valid)
        total = total + weights.flow * flow
        terms["flow"] = flow.detach()
    if weights.mask > 0 and mask_gt is not None and "mask" in outputs:
        mask = F.binary_cross_entropy_with_logits(outputs["mask"][:, 0], mask_gt.to(outputs["mask"].dtype))
        total = total + weights.mask * mask
        terms["mask"] = mask.detach()
    return total, terms, (rot_new, trans_new)
