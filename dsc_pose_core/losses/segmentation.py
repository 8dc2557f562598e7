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
