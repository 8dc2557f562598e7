"""Segmentation loss on pseudo-labelled real images (dsc-posenet eq. 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..segmentation.pseudo_labels import IGNORE


def masked_segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """eq. (2): binary cross-entropy summed over the pixels m not in U_x (labels != IGNORE),
    normalised by their count so batches with different numbers of certain pixels weigh alike."""
    certain = labels != IGNORE
    if not certain.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[certain], labels[certain].to(logits.dtype))


def balanced_masked_segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """eq. (2) over the certain pixels, with foreground and background terms averaged separately and
    weighted equally (an option, not in the paper): counters the drift towards background that
    self-training shows when certain background outnumbers certain foreground."""
    certain = labels != IGNORE
    if not certain.any():
        return logits.sum() * 0.0
    per_pixel = F.binary_cross_entropy_with_logits(logits, (labels == 1).to(logits.dtype), reduction="none")
    terms = []
    for selected in (certain & (labels == 1), certain & (labels == 0)):
        if selected.any():
            terms.append(per_pixel[selected].mean())
    return torch.stack(terms).mean()


IOU_SURROGATES = ("none", "lovasz", "dice")


def iou_surrogate_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """A differentiable stand-in for 1 - mask IoU over the certain pixels (labels != IGNORE), added to
    eq. (2) as an option (not in dsc-posenet, whose eq. 2 is cross-entropy only): ``"lovasz"`` the
    Lovasz hinge per image (Berman et al., CVPR 2018: a convex surrogate of the per-image Jaccard loss,
    the measure this stage is scored by), ``"dice"`` the soft Dice loss over the batch.
    Both from segmentation-models-pytorch. logits, labels: [B,H,W]."""
    import segmentation_models_pytorch as smp

    if kind == "lovasz":
        fn = smp.losses.LovaszLoss(mode="binary", per_image=True, ignore_index=IGNORE, from_logits=True)
    elif kind == "dice":
        fn = smp.losses.DiceLoss(mode="binary", ignore_index=IGNORE, from_logits=True)
    else:
        raise ValueError(f"unknown IoU surrogate {kind!r}; choose one of {IOU_SURROGATES[1:]}")
    return fn(logits.unsqueeze(1), labels.long().unsqueeze(1))
