"""DeepLabV3+ segmentation network of the weakly-supervised step (dsc-posenet sec. 3.1 and 4.3).

The paper uses DeepLabV3+ with a (GCT-)ResNet-50 backbone. Here the backbone is a configurable
ResNet (18 / 34 / 50) from segmentation-models-pytorch, always built with ``encoder_weights=None``:
nothing is downloaded, the network is trained from scratch or from weights this package trained.

One output channel per object of the dataset: for a region of interest around object ``o`` the loss
and the prediction use channel ``index(o)`` only, so one model serves all objects (see
:mod:`dsc_pose_core.training.segmentation`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ENCODERS = ("resnet18", "resnet34", "resnet50")
OUTPUT_STRIDES = (8, 16)
# DeepLabV3+'s defaults (output stride 16, atrous rates 12 / 24 / 36: the DeepLabV3+ paper's rates for
# a 513 px input, doubled for its output stride 8 variant) are kept for checkpoints saved before the
# two were configurable
DEFAULT_OUTPUT_STRIDE = 16
DEFAULT_ATROUS_RATES = (12, 24, 36)
# inputs are padded to a multiple of the largest output stride
SIZE_MULTIPLE = 16
# per-channel normalisation of RGB in [0, 1] (ImageNet statistics, a common convention)
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)


class RoiSegmenter(nn.Module):
    """DeepLabV3+ mapping normalised RGB [B,3,H,W] to per-object logits [B,n_objects,H,W].

    Any H, W works: the input is replicate-padded to a multiple of 16 and the logits cropped back.
    """

    def __init__(self, n_objects: int, encoder: str = "resnet18", decoder_channels: int = 256,
                 output_stride: int = DEFAULT_OUTPUT_STRIDE, atrous_rates=DEFAULT_ATROUS_RATES):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")
        if n_objects < 1:
            raise ValueError("n_objects must be >= 1")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, not {output_stride}")
        rates = tuple(int(r) for r in atrous_rates)
        if len(rates) != 3 or min(rates) < 1:
            raise ValueError(f"atrous_rates must be three positive integers, not {atrous_rates}")
        import segmentation_models_pytorch as smp

        self.n_objects = int(n_objects)
        self.encoder_name = encoder
        # The ASPP's dilated branches must fit the encoder's last feature map: a 96 px ROI at output
        # stride 16 gives 6x6 cells, where rates 12 / 24 / 36 sample only padding; output stride 8 and
        # rates scaled to the ROI (e.g. 2 / 4 / 6 on 12x12) keep all branches on the image.
        self.net = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, in_channels=3,
                                     classes=self.n_objects, decoder_channels=int(decoder_channels),
                                     encoder_output_stride=int(output_stride), decoder_atrous_rates=rates)
        # log(f / (1 - f)) per channel, added to the logits: the class-balanced eq. (2) trains the network
        # as if foreground and background were equally likely; with f the foreground share of the
        # certain pixels it was trained on, the offset turns its output back into the plain posterior
        # (prior correction; 0 = no correction, the default and what older checkpoints load with)
        self.register_buffer("foreground_prior_logit", torch.zeros(self.n_objects))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % SIZE_MULTIPLE, (-width) % SIZE_MULTIPLE
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
        logits = self.net(images) + self.foreground_prior_logit.view(1, -1, 1, 1)
        return logits[..., :height, :width]

    def set_foreground_prior(self, foreground_fraction: torch.Tensor) -> None:
        """Prior correction after class-balanced training: ``foreground_fraction`` [n_objects] is each
        channel's foreground share f of the certain training pixels (NaN = channel unseen: unchanged)."""
        fraction = torch.as_tensor(foreground_fraction, dtype=torch.float32, device=self.foreground_prior_logit.device)
        seen = torch.isfinite(fraction)
        fraction = fraction.clamp(1e-3, 1 - 1e-3)
        self.foreground_prior_logit[seen] = torch.log(fraction / (1 - fraction))[seen]


def normalise_rgb(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 or float 0-255 images [B,3,H,W] -> normalised float32."""
    mean = torch.tensor(RGB_MEAN, device=images_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(RGB_STD, device=images_uint8.device).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std
