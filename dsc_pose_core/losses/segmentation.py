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


def _log_same_label(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """log P(y_a = y_b) = log(p_a p_b + (1 - p_a)(1 - p_b)), computed in log space."""
    return torch.logaddexp(F.logsigmoid(logits_a) + F.logsigmoid(logits_b),
                           F.logsigmoid(-logits_a) + F.logsigmoid(-logits_b))


def neighbour_offsets(dilation: int) -> list[tuple[int, int]]:
    """The 8 neighbours of a pixel at distance ``dilation`` (row, column offsets)."""
    return [(dy * dilation, dx * dilation) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def colour_similarity(lab: torch.Tensor, dy: int, dx: int, theta: float) -> torch.Tensor:
    """exp(-||c_i - c_j|| / theta) between each pixel i and its neighbour j = i + (dy, dx) (BoxInst's
    colour similarity, LAB colours [B,3,H,W]); [B,H,W], 0 where the neighbour leaves the image."""
    height, width = lab.shape[-2:]
    similarity = torch.zeros(lab.shape[0], height, width, dtype=lab.dtype, device=lab.device)
    (ys, yd), (xs, xd) = _overlap(dy, height), _overlap(dx, width)
    similarity[:, ys, xs] = _similarity_of_pairs(lab, ys, xs, yd, xd, theta)
    return similarity


def _similarity_of_pairs(lab: torch.Tensor, ys: slice, xs: slice, yd: slice, xd: slice, theta: float) -> torch.Tensor:
    return torch.exp(-(lab[:, :, ys, xs] - lab[:, :, yd, xd]).norm(dim=1) / theta)


def _overlap(offset: int, size: int) -> tuple[slice, slice]:
    """Slices (source, shifted) such that source[k] + offset = shifted[k] within [0, size)."""
    if offset >= 0:
        return slice(0, size - offset), slice(offset, size)
    return slice(-offset, size), slice(0, size + offset)


def pairwise_affinity_loss(logits: torch.Tensor, lab: torch.Tensor, region: torch.Tensor, dilation: int = 2,
                           threshold: float = 0.3, theta: float = 2.0) -> torch.Tensor:
    """Colour-affinity term of BoxInst (Tian et al., CVPR 2021, eq. 4 with the colour similarity of its
    sec. 3.3: theta = 2, tau = 0.3, dilation 2, 8 neighbours): -log P(y_i = y_j) averaged over the
    neighbour pairs (i, j) inside ``region`` whose LAB colours are similar (S_ij >= tau). Not in
    dsc-posenet: a label-free term that pulls mask outlines onto colour edges on real images, where
    eq. (2) ignores the uncertain band around the outline. logits [B,H,W], lab [B,3,H,W], region [B,H,W]
    bool."""
    height, width = logits.shape[-2:]
    total = logits.sum() * 0.0
    count = 0
    for dy, dx in neighbour_offsets(dilation):
        (ys, yd), (xs, xd) = _overlap(dy, height), _overlap(dx, width)
        similar = _similarity_of_pairs(lab, ys, xs, yd, xd, theta) >= threshold
        edges = similar & region[:, ys, xs] & region[:, yd, xd]
        if edges.any():
            log_same = _log_same_label(logits[:, ys, xs], logits[:, yd, xd])
            total = total - log_same[edges].sum()
            count += int(edges.sum())
    return total / max(count, 1)
