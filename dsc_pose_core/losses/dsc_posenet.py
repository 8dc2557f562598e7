"""Losses of DSC-PoseNet (dsc-posenet sec. 3.2, eq. 4-15).

All keypoint errors are computed in *image* pixels (predictions are mapped back from their view with
M^-1, i.e. A^-1 N^-1) and divided by sigma * S, S the longer side of the object's 2D box (eq. 4): so
the same loss value means the same error relative to the object's size at every scale. Views are
similarities of the image, so this equals the error in the view divided by the view's S.
``sigma`` is not given in the paper; 0.05 by default (an error of 5 % of the box side costs ~0.5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry.camera import project_points
from ..geometry.pnp import differentiable_pnp
from ..models.dsc_posenet import view_to_image


def normalised_smooth_l1(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, sigma: float,
                         beta: float = 1.0) -> torch.Tensor:
    """smooth-l1((pred - target) / (sigma S)) summed over x, y: [B,...,2] -> [B,...]."""
    shape = (-1,) + (1,) * (pred.dim() - 1)
    err = (pred - target) / (sigma * scale.view(shape))
    return F.smooth_l1_loss(err, torch.zeros_like(err), reduction="none", beta=beta).sum(-1)


def keypoint_loss(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, sigma: float = 0.05,
                  beta: float = 1.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (4): sum_n l1((k~_n - k_n) / (sigma S)), mean over the batch. pred/target [B,N,2] image px,
    scale [B]; ``weight`` [B] selects samples (e.g. valid PnP targets)."""
    per_sample = normalised_smooth_l1(pred, target, scale, sigma, beta).sum(-1)
    if weight is None:
        return per_sample.mean()
    return (per_sample * weight).sum() / weight.sum().clamp_min(1.0)


def views_to_image(votes: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Per-pixel votes [B,N,2,M] in view px -> image px (M^-1)."""
    batch, n, _, m = votes.shape
    flat = votes.permute(0, 1, 3, 2).reshape(batch, n * m, 2)
    return view_to_image(flat, matrix).reshape(batch, n, m, 2).permute(0, 1, 3, 2)


def grid_mask(mask: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Input-resolution masks [B,H,W] -> fraction of each output cell [B,h,w] (area average)."""
    return F.adaptive_avg_pool2d(mask.unsqueeze(1).float(), grid_hw).squeeze(1)


def offset_loss(votes_image: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, foreground: torch.Tensor,
                sigma: float = 0.05, beta: float = 1.0) -> torch.Tensor:
    """Eq. (5): sum_n sum_{m in O} l1((p_m + dk_nm - k_n) / (sigma S)). votes_image [B,N,2,M] image px,
    target [B,N,2], foreground [B,M] (O, the ground-truth visible mask on synthetic data). The sum
    over m is averaged over |O| (so the loss does not grow with the object's pixel count)."""
    err = normalised_smooth_l1(votes_image.permute(0, 1, 3, 2), target.unsqueeze(2), scale, sigma, beta)  # [B,N,M]
    per_sample = (err.sum(1) * foreground).sum(-1) / foreground.sum(-1).clamp_min(1.0)
    return per_sample.mean()


def mask_loss(mask_logits: torch.Tensor, mask: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy of the segmentation branch against a (visible) mask [B,H,W] at input
    resolution, pooled to the output grid (soft targets at the boundary); ``ignore`` pixels
    (cells > 50 % ignored) carry no loss."""
    logits = mask_logits[:, 0]
    target = grid_mask(mask, logits.shape[-2:])
    weight = torch.ones_like(target)
    if ignore is not None:
        weight = (grid_mask(ignore, logits.shape[-2:]) <= 0.5).float()
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


def pnp_reprojection(keypoints_2d: torch.Tensor, keypoints_3d: torch.Tensor, K: torch.Tensor):
    """Eq. (8)-(9): (R~, t~) = BPnP(k~, k3D, K) and the re-projection P(k~) = pi(K (R~ k3D + t~)).
    Returns (reprojected [B,N,2], R [B,3,3], t [B,3], valid [B]: finite pose in front of the camera)."""
    R, t = differentiable_pnp(keypoints_2d, keypoints_3d, K)
    cam = keypoints_3d.expand(keypoints_2d.shape[0], -1, -1) @ R.transpose(1, 2) + t[:, None]
    valid = torch.isfinite(t).all(-1) & torch.isfinite(R).flatten(1).all(-1) & (cam[..., 2].min(-1).values > 1e-2)
    return project_points(cam, K), R, t, valid


def dual_scale_target(k_unnorm: torch.Tensor, k_norm: torch.Tensor, keypoints_3d: torch.Tensor, K: torch.Tensor,
                      stop_gradient: bool = True):
    """Eq. (11): k-bar = P((k~(x) + N^-1 k~(N(x))) / 2), both already in image px. With
    ``stop_gradient`` (default) the target is a constant, as a teacher signal (the un-augmented
    predictions then learn from the alignment loss through BPnP, eq. 13); otherwise gradients flow
    through BPnP into both scales' predictions."""
    average = 0.5 * (k_unnorm + k_norm)
    if stop_gradient:
        with torch.no_grad():
            target, R, t, valid = pnp_reprojection(average.detach(), keypoints_3d, K)
        return target.detach(), valid
    target, R, t, valid = pnp_reprojection(average, keypoints_3d, K)
    return target, valid


def dual_scale_loss(k_aug_unnorm: torch.Tensor, k_aug_norm: torch.Tensor, target: torch.Tensor, scale: torch.Tensor,
                    valid: torch.Tensor, sigma: float = 0.05, beta: float = 1.0) -> torch.Tensor:
    """Eq. (10): l1((A^-1 k~(A(x)) - k-bar) / (sigma S)) + l1((A^-1 N^-1 k~(N(A(x))) - k-bar) / (sigma S)),
    predictions already mapped to image px; samples whose PnP failed (``valid`` False) are skipped."""
    weight = valid.float()
    return (keypoint_loss(k_aug_unnorm, target, scale, sigma, beta, weight)
            + keypoint_loss(k_aug_norm, target, scale, sigma, beta, weight))


def visible_silhouette_dice(rendered: torch.Tensor, foreground: torch.Tensor, pseudo: torch.Tensor,
                            ignore: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                            eps: float = 1.0) -> torch.Tensor:
    """Eq. (12)-(14): V = y^R * y~ (rendered silhouette times the predicted foreground probability),
    Dice(y-hat, V) = 1 - (sum 2 y-hat V + eps) / (sum (y-hat + V) + eps), mean over the batch.
    All [B,H,W] on the same crop; ``ignore`` pixels (uncertain pseudo labels) are left out."""
    visible = rendered * foreground
    keep = torch.ones_like(pseudo) if ignore is None else 1.0 - ignore
    dims = (1, 2)
    inter = (2.0 * pseudo * visible * keep).sum(dims)
    total = ((pseudo + visible) * keep).sum(dims)
    dice = 1.0 - (inter + eps) / (total + eps)
    if valid is None:
        return dice.mean()
    weight = valid.float()
    return (dice * weight).sum() / weight.sum().clamp_min(1.0)


def total_self_loss(key_syn, off_syn, dual_real, align_real, lambda_1: float, lambda_2: float, extra=0.0):
    """Eq. (15): L_self = L_key^syn + L_off^syn + lambda_1 L_dual^real + lambda_2 L_align^real (+ the
    synthetic mask term of the segmentation branch, ``extra``)."""
    return key_syn + off_syn + lambda_1 * dual_real + lambda_2 * align_real + extra
