"""Self6D's losses (self6d sec. 3): the synthetic stage (eq. 2-3) and the self-supervised stage on
unlabeled RGB-D (eq. 4-11). Every term is per sample [B]; the trainer averages and weights them.

Images are [B,3,H,W] in [0, 1]; masks [B,H,W]; depth [B,H,W] metres with 0 = no measurement.
``mask_pred`` is the network's own visible-mask prediction M^P on the observed image (binarised at
0.5, no gradient: it is the weak label), ``render`` the differentiable render at the predicted pose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry.camera import backproject
from .point_matching import point_matching_loss

EPS = 1e-6


def mask_bce(mask_logits: torch.Tensor, mask_target: torch.Tensor) -> torch.Tensor:
    """L_bce of eq. (2): the visible-mask branch on synthetic images."""
    return F.binary_cross_entropy_with_logits(mask_logits, mask_target.float(), reduction="none").flatten(1).mean(1)


def pose_loss(rot_pred, trans_pred, rot_gt, trans_gt, points, symmetries=None) -> torch.Tensor:
    """L_pose of eq. (3): avg_x ||(R x + t) - (R^ x + t^)||_1 over model points (closest symmetric
    ground truth for symmetric objects)."""
    return point_matching_loss(rot_pred, trans_pred, rot_gt, trans_gt, points, symmetries)


def recalibrated_mask_loss(mask_render: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """eq. (4): -1/|N+| sum_{N+} M^P log M^R - 1/|N-| sum_{N-} log(1 - M^R); the foreground and
    background are averaged separately so a small object's pixels weigh as much as the background's."""
    positive = (mask_pred > 0.5).float()
    negative = 1.0 - positive
    m = mask_render.clamp(EPS, 1.0 - EPS)
    fg = -(positive * mask_pred * torch.log(m)).flatten(1).sum(1) / positive.flatten(1).sum(1).clamp_min(1.0)
    bg = -(negative * torch.log(1.0 - m)).flatten(1).sum(1) / negative.flatten(1).sum(1).clamp_min(1.0)
    return fg + bg


def _ab(images: torch.Tensor) -> torch.Tensor:
    from kornia.color import rgb_to_lab

    return rgb_to_lab(images.clamp(0.0, 1.0))[:, 1:]  # rho: LAB without the light channel L


def lab_loss(observed: torch.Tensor, rendered: torch.Tensor, mask_pred: torch.Tensor,
             mask_render: torch.Tensor | None = None) -> torch.Tensor:
    """eq. (5): 1/|N+| sum_{j in N} ||rho(I^S)_j M^P_j - rho(I^R)_j||_1, rho = LAB without L (a, b in
    [-128, 127]). The normaliser is |N+ u rendered mask| when ``mask_render`` is given: with |N+|
    alone an almost empty M^P (early in training) divides a large rendered area by a few pixels."""
    positive = (mask_pred > 0.5).float()
    diff = (_ab(observed) * positive[:, None] - _ab(rendered)).abs().sum(1)
    support = positive if mask_render is None else torch.maximum(positive, (mask_render > 0.5).float())
    return diff.flatten(1).sum(1) / support.flatten(1).sum(1).clamp_min(1.0)


# Wang, Simoncelli and Bovik, "Multi-scale structural similarity", 2003: exponents of the 5 scales
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ssim_components(x: torch.Tensor, y: torch.Tensor, window: int = 7, sigma: float = 1.5,
                    data_range: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel SSIM and its contrast-structure factor cs, [B,C,H,W], Gaussian window (kornia's
    separable filter, reflect borders; the SSIM map equals ``kornia.metrics.ssim``)."""
    from kornia.filters import filter2d_separable, get_gaussian_kernel1d

    kernel = get_gaussian_kernel1d(window, sigma, device=x.device, dtype=x.dtype)
    blur = lambda img: filter2d_separable(img, kernel, kernel)  # noqa: E731
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return luminance * cs, cs


def ms_ssim(x: torch.Tensor, y: torch.Tensor, scales: int = 5, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """MS-SSIM per sample [B] (Wang et al. 2003): cs at scales 1..s-1 and the full SSIM at scale s, each
    mean-pooled over the image and channels, combined with the paper's exponents; images halve
    (2x2 average) between scales. A 7 px window (not 11) so that 5 scales fit a 64 px ROI
    (64 -> 4 px). Negative means are clamped to 0 before the fractional powers (as common
    implementations do) to keep the gradient finite."""
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    factors = []
    for scale in range(scales):
        ssim_map, cs_map = ssim_components(x, y, min(window, 2 * (min(x.shape[-2:]) // 2) - 1), sigma)
        last = scale == scales - 1
        factors.append((ssim_map if last else cs_map).flatten(1).mean(1).clamp_min(EPS))
        if not last:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.prod(torch.stack(factors, dim=1) ** weights, dim=1)


class MsSsimLoss(torch.nn.Module):
    """eq. (6): 1 - ms-ssim(I^S * M^P, I^R, s = 5). Written here rather than kornia's ``MS_SSIMLoss``:
    kornia filters at full resolution with sigmas up to 8 px, which cost ~4 s forward + backward per
    batch of 8 ROIs on this CPU; the dyadic pyramid costs milliseconds."""

    def __init__(self, scales: int = 5):
        super().__init__()
        self.scales = scales

    def forward(self, observed, rendered, mask_pred) -> torch.Tensor:
        positive = (mask_pred > 0.5).float()[:, None]
        return 1.0 - ms_ssim(observed * positive, rendered, self.scales)


def perceptual_loss(feature_levels, observed, rendered, mask_pred) -> torch.Tensor:
    """eq. (7): sum_l 1/|N^l| sum_j ||phi^l_j(I^S * M^P) - phi^l_j(I^R)||^2 over channel-normalised
    feature maps. ``feature_levels(images) -> [feature maps]`` is a frozen network (images in [0, 1]); the
    paper uses 5 layers of an ImageNet AlexNet, the trainer passes the ImageNet EfficientNet-Lite0's
    features at strides 2-16 or its own trunk after the synthetic stage (``training.self6d``)."""
    positive = (mask_pred > 0.5).float()[:, None]
    total = torch.zeros(observed.shape[0], device=observed.device)
    for a, b in zip(feature_levels(observed * positive), feature_levels(rendered)):
        a = F.normalize(a, dim=1, eps=EPS)
        b = F.normalize(b, dim=1, eps=EPS)
        total = total + ((a - b) ** 2).sum(1).flatten(1).mean(1)
    return total


def visible_points(depth: torch.Tensor, mask: torch.Tensor, K: torch.Tensor, max_points: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """eq. (9): pi^-1(D, M, K) = {K^-1 (x, y, 1)^T D_j | M_j > 0 and D_j > 0}, at most ``max_points``
    per sample (random subset). Returns padded points [B,P,3] and lengths [B] (for PyTorch3D)."""
    batch, height, width = depth.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=depth.device), torch.arange(width, device=depth.device),
                            indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1).to(depth.dtype).reshape(-1, 2)
    clouds = []
    for b in range(batch):
        valid = ((mask[b] > 0.5) & (depth[b] > 0)).reshape(-1).nonzero()[:, 0]
        if valid.numel() > max_points:
            valid = valid[torch.randperm(valid.numel(), generator=generator, device=valid.device)[:max_points]]
        clouds.append(backproject(pixels[valid], depth[b].reshape(-1)[valid], K[b]))
    lengths = torch.tensor([c.shape[0] for c in clouds], device=depth.device)
    padded = torch.zeros(batch, max(1, int(lengths.max())), 3, dtype=depth.dtype, device=depth.device)
    for b, c in enumerate(clouds):
        padded[b, :c.shape[0]] = c
    return padded, lengths


def geometric_loss(depth_observed, mask_pred, depth_render, mask_render, K, scale, max_points: int = 1024,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """eq. (10-11): chamfer distance between the observed visible cloud P^S = pi^-1(D^S, M^P, K) and the
    rendered one P^R = pi^-1(D^R, M^R, K) (PyTorch3D's ``chamfer_distance``: squared Euclidean
    distances, mean over each cloud's points, both directions summed). Points are divided by ``scale``
    (the object diameter) so the loss does not depend on the object's size. A sample with an empty
    cloud gives 0 (nothing to align)."""
    from pytorch3d.loss import chamfer_distance

    observed, n_observed = visible_points(depth_observed, mask_pred, K, max_points, generator)
    rendered, n_rendered = visible_points(depth_render, mask_render, K, max_points, generator)
    scale = torch.as_tensor(scale, dtype=observed.dtype, device=observed.device).reshape(-1, 1, 1)
    loss, _ = chamfer_distance(observed / scale, rendered / scale, x_lengths=n_observed.clamp_min(1),
                               y_lengths=n_rendered.clamp_min(1), batch_reduction=None, point_reduction="mean")
    return torch.where((n_observed > 0) & (n_rendered > 0), loss, torch.zeros_like(loss))
