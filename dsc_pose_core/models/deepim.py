"""DeepIM network (deepim sec. 3.2, Fig. 3, sec. 4.1), trained from scratch.

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


def model_from_checkpoint(path, device="cpu"):
    """(network in eval mode, its :class:`~dsc_pose_core.checkpoint.Checkpoint`) of a DeepIM checkpoint,
    read weights-only; ``inference`` holds the zoom (``width``, ``height``, ``expand``,
    ``render_faces``), ``translation_units`` and ``observed_box`` it was trained with."""
    from ..checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path, METHOD, map_location=device)
    m = checkpoint.network
    model = DeepImNet(m["width"], m["fc_dim"], tuple(m["pool"]), m.get("aux_heads", True), m.get("batch_norm", False))
    model.load_state_dict(checkpoint.weights)
    return model.to(device).eval(), checkpoint
