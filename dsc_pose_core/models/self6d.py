"""Self6D's pose network (self6d sec. 3, "Architecture Details"), on ROIs given by 2D boxes.

The paper's network is FCOS + FPN (ResNet-50) for the 2D boxes, then ROI-Align on the FPN features
concatenated with the RGB image and 2D coordinates (CoordConv), and branches for rotation,
translation (2D projection of the centroid + distance) and the visible mask. Here the boxes come
from the node's detections topic, so the detector part is dropped and the ROI is cut from the image
first: a square window of ``context`` x the box's longer side resampled to ``input_size`` px, fed to
a ResNet (torchvision, ``weights=None``: trained from scratch, no download) truncated after
``backbone_stages`` stages. Its feature map is concatenated with the ROI's RGB and the *full-image*
2D coordinates of every cell (normalised to [-1, 1] by the image size), so the heads know where in
the image the ROI was.

Outputs (all camera independent, so one model serves any K):
* rotation: a 6D rotation (two columns of R, Gram-Schmidt; Zhou et al., CVPR 2019) instead of the
  paper's quaternion: the 6D map is continuous, a quaternion regression has a discontinuity (q and -q)
  that slows training, which matters on a CPU budget. It is *allocentric* (relative to the ray through
  the object centre, ``geometry.allocentric``) because that is what a crop shows.
* translation as image-space centre + depth, scale invariant (as CDPN's SITE):
  offset (o_x, o_y) = (c - window centre) / window side and o_z = log(z s / (f d)) with s the window
  side in image pixels, f = sqrt(fx fy) and d the object diameter. The pose is then built with the
  image's *own* K: c = window centre + o s, z = exp(o_z) f d / s, t = z K^-1 (c_x, c_y, 1).
* visible-mask logits at ``input_size`` (upsampled from stride 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.allocentric import allocentric_to_egocentric, egocentric_to_allocentric
from ..geometry.rotations import rotation_6d_to_matrix
from .backbone import IMAGENET_MEAN, IMAGENET_STD

BACKBONES = ("resnet18", "resnet34")
METHOD = "self6d"  # its checkpoints' method (``checkpoint.METHODS``)


@dataclass
class Self6dModelConfig:
    backbone: str = "resnet18"
    backbone_stages: int = 2  # 2: stride 8 (8x8 cells on a 64 px ROI); 3: stride 16
    input_size: int = 64  # ROI side in px
    context: float = 1.2  # ROI window side = context x the box's longer side
    head_channels: int = 128

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"self6d model: backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone_stages not in (1, 2, 3, 4):
            raise ValueError("self6d model: backbone_stages must be 1..4")
        if self.input_size % 32 != 0 or self.input_size < 32:
            raise ValueError("self6d model: input_size must be a positive multiple of 32")
        if not self.context >= 1.0:
            raise ValueError("self6d model: context must be >= 1")


def normalise_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float images [B,3,H,W] -> ImageNet-normalised float."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def window_coordinates(windows: torch.Tensor, image_sizes: torch.Tensor, cells: int) -> torch.Tensor:
    """Full-image coordinates of the ``cells x cells`` cell centres of each ROI window, normalised to
    [-1, 1] by the image size: [B,2,cells,cells] (x, y). windows [B,4] pixel-edge (x1, y1, x2, y2);
    image_sizes [B,2] (width, height)."""
    steps = (torch.arange(cells, device=windows.device, dtype=windows.dtype) + 0.5) / cells
    x = windows[:, 0:1] + steps[None] * (windows[:, 2:3] - windows[:, 0:1])  # [B,cells] pixel edges
    y = windows[:, 1:2] + steps[None] * (windows[:, 3:4] - windows[:, 1:2])
    x = 2.0 * x / image_sizes[:, 0:1] - 1.0
    y = 2.0 * y / image_sizes[:, 1:2] - 1.0
    return torch.stack([x[:, None, :].expand(-1, cells, -1), y[:, :, None].expand(-1, -1, cells)], dim=1)


class ResNetTrunk(nn.Module):
    """A torchvision ResNet up to ``stages`` stages; ``levels()`` gives every stage's output (the
    perceptual loss, eq. (7), reads them)."""

    def __init__(self, name: str, stages: int):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4][:stages])
        widths = [64, 128, 256, 512]
        self.channels = [64] + widths[:stages]

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [self.stem(x)]
        x = self.pool(out[0])
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class Self6dNet(nn.Module):
    def __init__(self, config: Self6dModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.trunk = ResNetTrunk(config.backbone, config.backbone_stages)
        c_feat = self.trunk.channels[-1]
        c = config.head_channels
        self.fuse = nn.Sequential(nn.Conv2d(c_feat + 3 + 2, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                  nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.pose_conv = nn.Sequential(nn.Conv2d(c, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                       nn.AdaptiveAvgPool2d(2))
        self.rotation_head = nn.Sequential(nn.Linear(4 * c, 256), nn.ReLU(inplace=True), nn.Linear(256, 6))
        self.translation_head = nn.Sequential(nn.Linear(4 * c, 256), nn.ReLU(inplace=True), nn.Linear(256, 3))
        c_mask = self.trunk.channels[1]  # stride-4 level (layer1)
        self.mask_lateral = nn.Conv2d(c, c_mask, 1)
        self.mask_head = nn.Sequential(nn.Conv2d(c_mask, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 1, 1))
        with torch.no_grad():  # start at the identity allocentric rotation and the window centre
            self.rotation_head[-1].weight.mul_(0.01)
            self.rotation_head[-1].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
            self.translation_head[-1].weight.mul_(0.01)
            self.translation_head[-1].bias.zero_()

    def forward(self, images: torch.Tensor, windows: torch.Tensor, image_sizes: torch.Tensor) -> dict:
        """images [B,3,S,S] (uint8 or [0,1]) ROI crops; windows [B,4] their pixel-edge windows in the
        full image; image_sizes [B,2] (width, height). Returns rot6d [B,6], offsets [B,3]
        (o_x, o_y, o_z), mask_logits [B,S,S]."""
        x = normalise_rgb(images)
        levels = self.trunk.levels(x)
        feat = levels[-1]
        cells = feat.shape[-1]
        rgb_small = F.adaptive_avg_pool2d(x, cells)
        coords = window_coordinates(windows.to(feat.dtype), image_sizes.to(feat.dtype), cells)
        fused = self.fuse(torch.cat([feat, rgb_small, coords], dim=1))
        pooled = self.pose_conv(fused).flatten(1)
        stride4 = levels[1]
        mask_feat = stride4 + F.interpolate(self.mask_lateral(fused), size=stride4.shape[-2:], mode="bilinear",
                                            align_corners=False)
        mask_logits = F.interpolate(self.mask_head(mask_feat), size=images.shape[-2:], mode="bilinear",
                                    align_corners=False)[:, 0]
        return {"rot6d": self.rotation_head(pooled), "offsets": self.translation_head(pooled),
                "mask_logits": mask_logits}


def focal_length(K: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(K[..., 0, 0] * K[..., 1, 1])


def window_centre_side(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    centre = 0.5 * (windows[:, :2] + windows[:, 2:])
    side = windows[:, 2] - windows[:, 0]
    return centre, side


def decode_pose(rot6d: torch.Tensor, offsets: torch.Tensor, windows: torch.Tensor, K: torch.Tensor,
                diameter: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Network outputs -> (R [B,3,3], t [B,3]) with the image's own K [B,3,3] (see module doc)."""
    centre, side = window_centre_side(windows)
    pixel = centre + offsets[:, :2] * side[:, None]
    z = torch.exp(offsets[:, 2]) * focal_length(K) * diameter / side
    homogeneous = torch.cat([pixel, torch.ones_like(pixel[:, :1])], dim=1)
    t = z[:, None] * torch.linalg.solve(K, homogeneous[..., None])[..., 0]
    return allocentric_to_egocentric(rotation_6d_to_matrix(rot6d), t), t


def encode_pose(R: torch.Tensor, t: torch.Tensor, windows: torch.Tensor, K: torch.Tensor,
                diameter: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`decode_pose`: (allocentric R [B,3,3], offsets [B,3]) for a pose."""
    centre, side = window_centre_side(windows)
    projected = (K @ t[..., None])[..., 0]
    pixel = projected[:, :2] / projected[:, 2:3]
    offsets = torch.cat([(pixel - centre) / side[:, None],
                         torch.log(t[:, 2] * side / (focal_length(K) * diameter))[:, None]], dim=1)
    return egocentric_to_allocentric(R, t), offsets


class Self6dEstimator:
    """Inference for one object: (RGB image, K, 2D box) -> (R, t), the crop cut exactly as in training
    (``segmentation.roi``: a square window of ``context`` x the box's longer side)."""

    @classmethod
    def from_checkpoint(cls, path, device="cpu") -> "Self6dEstimator":
        """The estimator of a Self6D checkpoint; ``obj_id`` is the object it serves."""
        model, checkpoint = model_from_checkpoint(path, device)
        estimator = cls(model, float(checkpoint.inference["diameter"]), device=device)
        estimator.obj_id = checkpoint.obj_ids[0]
        return estimator

    def __init__(self, model: Self6dNet, diameter: float, device="cpu"):
        self.model = model.eval()
        self.diameter = float(diameter)
        self.device = torch.device(device)

    @torch.no_grad()
    def estimate(self, image, K, box_xywh) -> tuple:
        import numpy as np

        from ..segmentation.roi import crop, roi_window

        cfg = self.model.config
        window = roi_window(box_xywh, cfg.context)
        roi = crop(np.ascontiguousarray(image), window, cfg.input_size)
        images = torch.as_tensor(roi).permute(2, 0, 1)[None].to(self.device)
        windows = torch.as_tensor(window, dtype=torch.float32, device=self.device)[None]
        sizes = torch.tensor([[image.shape[1], image.shape[0]]], dtype=torch.float32, device=self.device)
        out = self.model(images, windows, sizes)
        K_t = torch.as_tensor(np.asarray(K), dtype=torch.float32, device=self.device)[None]
        R, t = decode_pose(out["rot6d"], out["offsets"], windows, K_t, self.diameter)
        return R[0].double().cpu().numpy(), t[0].double().cpu().numpy()


def model_from_checkpoint(path, device="cpu"):
    """(network in eval mode, its :class:`~dsc_pose_core.checkpoint.Checkpoint`) of a Self6D checkpoint,
    read weights-only; ``inference["diameter"]`` (metres) and ``obj_ids[0]`` say what it serves."""
    from ..checkpoint import read_checkpoint
    from ..typed_config import from_dict

    checkpoint = read_checkpoint(path, METHOD, map_location=device)
    model = Self6dNet(from_dict(Self6dModelConfig, checkpoint.network, "network"))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in checkpoint.weights.items()})
    return model.to(device).eval(), checkpoint
