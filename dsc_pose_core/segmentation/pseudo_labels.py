"""Pseudo labels for real images from network probabilities (dsc-posenet sec. 3.1).

Labels use three values: 1 foreground, 0 background, IGNORE for uncertain pixels, whose loss is
not computed (eq. 1-2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = 255
# dsc-posenet eq. (1): "We empirically set sigma to 0.7"
DEFAULT_CONFIDENCE = 0.7


def uncertain_pixels(probability: torch.Tensor, confidence: float = DEFAULT_CONFIDENCE) -> torch.Tensor:
    """eq. (1): U = {m | 1 - sigma < P(y_m = 1) < sigma}."""
    return (probability > 1.0 - confidence) & (probability < confidence)


def pseudo_label(probability: torch.Tensor, box_mask: torch.Tensor,
                 confidence: float = DEFAULT_CONFIDENCE) -> torch.Tensor:
    """Foreground probability [...,H,W] and the loosened box [...,H,W] (bool) -> uint8 labels.

    Foreground outside the box is an outlier by construction (the box encloses the object), so
    everything outside the box is certain background; uncertain pixels inside it are ignored.
    """
    labels = (probability >= 0.5).to(torch.uint8)
    labels[uncertain_pixels(probability, confidence)] = IGNORE
    labels[~box_mask] = 0
    return labels


def tta_probability(
    predict_logits: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    scales: Sequence[float] = (0.75, 1.0, 1.25),
    flips: bool = True,
) -> torch.Tensor:
    """Test-time augmentation (dsc-posenet sec. 3.1: multi-scale inputs and left-right flips):
    the mean of sigmoid probabilities over scales x flips, each resampled to the input size.

    ``predict_logits`` maps images [B,3,h,w] to logits [B,C,h,w]; returns [B,C,H,W].
    """
    height, width = images.shape[-2:]
    total, count = None, 0
    for scale in scales:
        size = (max(8, round(height * scale)), max(8, round(width * scale)))
        scaled = images if size == (height, width) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=False)
        for flip in ((False, True) if flips else (False,)):
            batch = scaled.flip(-1) if flip else scaled
            probability = torch.sigmoid(predict_logits(batch))
            if flip:
                probability = probability.flip(-1)
            if probability.shape[-2:] != (height, width):
                probability = F.interpolate(probability, size=(height, width), mode="bilinear", align_corners=False)
            total = probability if total is None else total + probability
            count += 1
    return total / count


def mask_iou(predicted: np.ndarray, reference: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly."""
    union = np.logical_or(predicted, reference).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(predicted, reference).sum() / union)
