"""DSC-PoseNet trainer (dsc-posenet sec. 3.2, 4.3): stages ``lb`` and ``self``.

* ``lb`` (lower bound, synthetic only): ``lb.warmup_steps`` of the offset loss (eq. 5, "we use the
  offset loss to warm up") + mask BCE, then eq. (4) + (5) + mask BCE, at both scales.
* ``self``: every step one synthetic batch (eq. 4, 5, mask) and one real batch: dual-scale and
  augmentation consistency (eq. 10-11 through BPnP) and visible silhouette alignment (eq. 12-14,
  Dice on a ``loss.align_size`` crop with a decimated mesh, soft silhouette at sigma 0.25 px because
  the 1 px one is 20-26 % larger than the hard mask); total eq. (15).
  With ``real.mode: with_real_pose_labels`` (the paper's upper bound "with real pose labels") the real
  batch is supervised like synthetic data with ground-truth keypoints instead.

One model per object (``obj_id``, the paper's set-up), or with ``obj_ids`` one network for several
objects: a shared trunk and decoder with per-object output channels (``model.n_objects`` =
``len(obj_ids)``, selected by each sample's ``obj_index``), trained on every object's renders and
real instances at once; :func:`export_object` writes one object's single-object checkpoint from it
(the pipeline's ``obj_XXXXXX.pt`` layout). Checkpoints (atomic, weights-only loadable):
``OUT/checkpoints/dsc_{stage}.pt`` and ``dsc_last.pt`` with the model weights, optimiser state,
stage, step, the config, the object id and its 3D keypoints.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data import bop_io
from ..data.dsc_views import (MODES, IndexedObjects, RealPoseDataset, SyntheticPoseDataset, ViewAugmentConfig,
                              real_instances, synthetic_instances)
from ..losses import dsc_posenet as L
from ..models.dsc_posenet import (METHOD, DscModelConfig, DscPoseNet, ScaleSpecificBatchNorm2d, box_region,
                                  image_to_view, resample_map, view_to_image)
from . import distributed
from ..checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from ..typed_config import ConfigError, to_dict
from .tensorboard_log import TrainLogger, tile
from .common import (SyntheticDataConfig, ensure_synthetic, real_background_frames, resolve_path, resume_state,
                     write_checkpoint)

STAGE_NAMES = ("lb", "self")
# the data's view tags ("u", "n"; "x_u", "a_n", ...) -> the model's view scale (its BatchNorm statistics)
VIEW_SCALE_OF_TAG = {"u": "unnorm", "n": "norm"}


@dataclass
class DscRealConfig:
    dataset: str = ""  # BOP root; "" = LM-O (bop_io.default_lmo_dir())
    scene_id: int = 2
    splits_file: str = "splits.json"
    train_split: str = "train_real"
    pseudo_dir: str = ""  # OUT/pseudo/iter_t of the segmentation stage (pseudo masks + boxes)
    mode: str = "pseudo"  # "pseudo" | "with_real_pose_labels" (upper bound: GT keypoints)
    box_seed: int = 0
    max_loosening: float = 0.15
    max_images: int = 0


@dataclass
class DscOptimConfig:
    steps: int = 100
    batch_size: int = 8
    real_batch_size: int = 4  # stage self
    lr: float = 1e-3
    lr_min: float = 1e-5
    decay_factor: float = 0.85  # paper: x0.85 every 5 epochs, from 1e-3 down to 1e-5
    decay_every: int = 50  # steps
    warmup_steps: int = 0  # stage lb: offset-only warm-up (eq. 5)
    grad_clip: float = 10.0


@dataclass
class DscLossConfig:
    sigma: float = 0.05  # eq. (4): errors divided by sigma * S
    beta: float = 1.0  # smooth-l1 transition
    mask_weight: float = 1.0  # segmentation branch BCE on synthetic masks
    lambda_1: float = 1.0  # eq. (15), L_dual
    lambda_2: float = 1.0  # eq. (15), L_align
    dual_stop_gradient: bool = True  # eq. (11) target as a constant
    align_size: int = 64  # alignment crop (the normalised crop's window), px
    align_faces: int = 800  # decimated mesh for the differentiable renderer
    align_sigma_px: float = 0.25
    align_faces_per_pixel: int = 30
    real_mask_weight: float = 0.0  # BCE of the mask branch on pseudo masks (not in the paper; 0 = off)


@dataclass
class DscPoseNetConfig:
    objects_file: str = "config/objects.yaml"
    models_dir: str = ""  # alternative to objects_file: BOP models folder (obj_XXXXXX.ply, mm)
    obj_id: int = 1
    # several objects: one shared network (per-object output channels); [] = the single ``obj_id``
    obj_ids: list[int] = field(default_factory=list)
    stages: list[str] = field(default_factory=lambda: ["lb", "self"])
    model: DscModelConfig = field(default_factory=DscModelConfig)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    real: DscRealConfig = field(default_factory=DscRealConfig)
    augment: ViewAugmentConfig = field(default_factory=ViewAugmentConfig)
    loss: DscLossConfig = field(default_factory=DscLossConfig)
    lb: DscOptimConfig = field(default_factory=lambda: DscOptimConfig(steps=300, warmup_steps=50))
    self_stage: DscOptimConfig = field(default_factory=lambda: DscOptimConfig(steps=100, lr=3e-4))
    init_checkpoint: str = ""
    # backbone (stem + ResNet stages) from a segmentation checkpoint of this package (same ResNet):
    # features already trained on these objects, since no pretrained weights can be downloaded
    init_backbone: str = ""
    checkpoint_every: int = 100
    workers: int = 0  # DataLoader worker processes: 0 on the 2-core CPU, several beside a GPU
    log_every: int = 10  # TensorBoard scalars (loss terms, lr) every N steps (0 = never)
    image_every: int = 100  # TensorBoard keypoint picture every N steps (0 = never)

    def validate(self) -> None:
        bad = [s for s in self.stages if s not in STAGE_NAMES]
        if bad or not self.stages:
            raise ConfigError(f"dsc_posenet.stages: {bad or self.stages} not in {STAGE_NAMES}")
        if self.real.mode not in MODES:
            raise ConfigError(f"dsc_posenet.real.mode {self.real.mode!r} not in {MODES}")
        if self.loss.sigma <= 0 or self.loss.align_sigma_px <= 0:
            raise ConfigError("dsc_posenet.loss: sigma and align_sigma_px must be > 0")
        self.model.validate()
        if self.obj_ids and len(set(self.obj_ids)) != len(self.obj_ids):
            raise ConfigError(f"dsc_posenet.obj_ids {self.obj_ids} repeats an object")

    def object_ids(self) -> list[int]:
        """The objects this run trains (one network): ``obj_ids`` or ``[obj_id]``."""
        return list(self.obj_ids) if self.obj_ids else [int(self.obj_id)]


def _cycle(dataset, batch_size: int, seed: int, workers: int = 0):
    generator = torch.Generator().manual_seed(seed)
    epoch = 0
    while True:
        dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=False,
                                             generator=generator, num_workers=workers)
        for batch in loader:
            yield batch
        epoch += 1


def _lr(opt: DscOptimConfig, step: int) -> float:
    return max(opt.lr * opt.decay_factor ** (step // max(1, opt.decay_every)), opt.lr_min)


class DscPoseNetTrainer:
    """Holds the model, the object's 3D keypoints and (for stage self) the differentiable renderer;
    ``synthetic_losses`` / ``real_losses`` compute the loss terms of one batch."""

    def __init__(self, cfg: DscPoseNetConfig, keypoints_3d: np.ndarray, mesh=None, device="cpu",
                 model: DscPoseNet | None = None):
        """``keypoints_3d`` [N,3] (one object) or [O,N,3] and ``mesh`` one mesh or a list of O (several
        objects, indexed by the batches' ``obj_index``)."""
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = (model or DscPoseNet(cfg.model)).to(self.device)
        self.net = distributed.wrap(self.model)  # the forward pass (DDP averages gradients over ranks)
        self.last_synthetic = None  # (view images, predicted and true keypoints in view px) for pictures
        keypoints_3d = torch.as_tensor(np.asarray(keypoints_3d), dtype=torch.float32, device=self.device)
        self.single = keypoints_3d.dim() == 2
        self.keypoints_3d = keypoints_3d[None] if self.single else keypoints_3d  # [O,N,3]
        self.renderer = None
        if mesh is not None:
            from ..render.differentiable import DifferentiableRenderer

            self.renderer = DifferentiableRenderer(cfg.loss.align_faces_per_pixel, cfg.loss.align_sigma_px, self.device)
            for index, one in enumerate(mesh if isinstance(mesh, (list, tuple)) else [mesh]):
                self.renderer.add_object(index, one, target_faces=cfg.loss.align_faces)

    def _forward_view(self, images: torch.Tensor, matrix: torch.Tensor, tag: str,
                      obj_index: torch.Tensor | None = None, box_xyxy: torch.Tensor | None = None) -> dict:
        """One view's batch (``tag`` "u"/"n", optionally prefixed "x_"/"a_") through the network with
        that scale's BatchNorm statistics (and each sample's object channels, ``obj_index``); with
        ``model.train_box_votes`` only the cells inside ``box_xyxy`` (image px) vote, as at inference."""
        obj_index = None if obj_index is None else obj_index.to(self.device)
        region = None
        if self.model.config.train_box_votes and box_xyxy is not None:
            region = box_region(matrix.to(self.device), box_xyxy.to(self.device), images.shape[-1],
                                self.model.config.out_stride)
        out = self.net(self.model.normalise(images.to(self.device)), obj_index=obj_index,
                       view=VIEW_SCALE_OF_TAG[tag[-1]], region=region)
        out["k_image"] = view_to_image(out["keypoints"], matrix.to(self.device))
        return out

    def _supervised(self, out: dict, matrix, keypoints, scale, mask, ignore=None, offsets_only=False) -> dict:
        lc = self.cfg.loss
        h, w = out["mask_logits"].shape[-2:]
        fg = (L.grid_mask(mask, (h, w)) > 0.5).float().reshape(mask.shape[0], -1)
        votes = L.views_to_image(out["votes"], matrix)
        terms = {"off": L.offset_loss(votes, keypoints, scale, fg, lc.sigma, lc.beta),
                 "mask": L.mask_loss(out["mask_logits"], mask, ignore)}
        if not offsets_only:
            terms["key"] = L.keypoint_loss(out["k_image"], keypoints, scale, lc.sigma, lc.beta)
        return terms

    def synthetic_losses(self, batch: dict, offsets_only: bool = False) -> dict:
        """Eq. (4), (5) and the mask BCE at both scales (summed over the scales)."""
        dev = self.device
        kp, scale = batch["keypoints"].to(dev), batch["scale"].to(dev)
        terms = {}
        for tag in ("u", "n"):
            matrix = batch[f"{tag}_matrix"].to(dev)
            out = self._forward_view(batch[f"{tag}_image"], matrix, tag, batch.get("obj_index"), batch.get("box_xyxy"))
            for k, v in self._supervised(out, matrix, kp, scale, batch[f"{tag}_mask"].to(dev),
                                         offsets_only=offsets_only).items():
                terms[k] = terms.get(k, 0.0) + v
            if tag == "u":
                self.last_synthetic = (batch["u_image"][:4], out["keypoints"][:4].detach().cpu(),
                                       image_to_view(kp[:4], matrix[:4]).detach().cpu())
        return terms

    def sample_picture(self) -> np.ndarray | None:
        """The latest synthetic un-normalised views with the true keypoints (green) and the predicted
        ones (red), joined by a line where the prediction is off."""
        if self.last_synthetic is None:
            return None
        import cv2

        images, predicted, true = self.last_synthetic
        pictures = []
        for image, pred, gt in zip(images, predicted, true):
            picture = np.ascontiguousarray(image.permute(1, 2, 0).numpy().astype(np.uint8))
            for (px, py), (gx, gy) in zip(pred.numpy(), gt.numpy()):
                cv2.line(picture, (int(gx), int(gy)), (int(px), int(py)), (255, 255, 0), 1)
                cv2.circle(picture, (int(gx), int(gy)), 2, (0, 255, 0), -1)
                cv2.circle(picture, (int(px), int(py)), 2, (255, 0, 0), -1)
            pictures.append(picture)
        return tile(pictures)

    def real_losses(self, batch: dict) -> dict:
        """Eq. (10)-(14) on a real batch (or supervised terms in the upper-bound mode)."""
        dev, lc = self.device, self.cfg.loss
        scale, K = batch["scale"].to(dev), batch["K"].to(dev)
        if "keypoints" in batch:  # with_real_pose_labels: supervised like synthetic data
            terms = {}
            for tag in ("a_u", "a_n"):
                matrix = batch[f"{tag}_matrix"].to(dev)
                out = self._forward_view(batch[f"{tag}_image"], matrix, tag, batch.get("obj_index"),
                                         batch.get("box_xyxy"))
                for k, v in self._supervised(out, matrix, batch["keypoints"].to(dev), scale,
                                             batch[f"{tag}_mask"].to(dev), batch[f"{tag}_ignore"].to(dev)).items():
                    terms[f"real_{k}"] = terms.get(f"real_{k}", 0.0) + v
            return terms
        bsz = scale.shape[0]
        obj_index = batch.get("obj_index")
        obj_index = torch.zeros(bsz, dtype=torch.long) if obj_index is None else obj_index
        obj_index = obj_index.to(dev)
        views = {}
        for tag in ("u", "n"):  # x and A(x) through the network together
            images = torch.cat([batch[f"x_{tag}_image"], batch[f"a_{tag}_image"]])
            matrices = torch.cat([batch[f"x_{tag}_matrix"], batch[f"a_{tag}_matrix"]]).to(dev)
            boxes = batch.get("box_xyxy")
            out = self._forward_view(images, matrices, tag, torch.cat([obj_index, obj_index]),
                                     None if boxes is None else torch.cat([boxes, boxes]))
            views[f"x_{tag}"] = {k: v[:bsz] for k, v in out.items() if k != "centres"}
            views[f"a_{tag}"] = {k: v[bsz:] for k, v in out.items() if k != "centres"}
        k3d = self.keypoints_3d[0][None] if self.single else self.keypoints_3d[obj_index]  # [1|B,N,3]
        # eq. (11): target from the un-augmented image at both scales
        target, valid = L.dual_scale_target(views["x_u"]["k_image"], views["x_n"]["k_image"], k3d, K,
                                            lc.dual_stop_gradient)
        # eq. (10): augmented predictions at both scales, mapped back with A^-1 (N^-1)
        terms = {"dual": L.dual_scale_loss(views["a_u"]["k_image"], views["a_n"]["k_image"], target, scale, valid,
                                           lc.sigma, lc.beta)}
        # eq. (12)-(14) at both scales: BPnP pose of that scale's keypoints, rendered on the alignment
        # crop, times that scale's predicted foreground probability resampled onto the crop
        align = 0.0
        if self.renderer is not None:
            m_align = batch["align_matrix"].to(dev)
            size = lc.align_size
            K_align = m_align @ K
            for tag, view_size in (("x_u", self.cfg.model.unnorm_size), ("x_n", self.cfg.model.norm_size)):
                _, R, t, ok = L.pnp_reprojection(views[tag]["k_image"], k3d, K)
                ok = ok & valid
                R = torch.where(ok[:, None, None], R, torch.eye(3, device=dev).expand_as(R))
                t = torch.where(ok[:, None], t, torch.tensor([0.0, 0.0, 1.0], device=dev).expand_as(t))
                rendered = torch.zeros(bsz, size, size, device=dev)
                for index in obj_index.unique().tolist():  # the renderer draws one object per call
                    rows = obj_index == index
                    rendered = rendered.index_put(
                        (rows.nonzero()[:, 0],),
                        self.renderer.silhouette(K_align[rows], int(index), R[rows], t[rows], size, size))
                prob = torch.sigmoid(views[tag]["mask_logits"])
                prob = resample_map(prob, batch[f"{tag}_matrix"].to(dev), view_size, m_align, size)[:, 0]
                align = align + L.visible_silhouette_dice(rendered, prob, batch["align_mask"].to(dev),
                                                          batch["align_ignore"].to(dev), ok)
        terms["align"] = align if torch.is_tensor(align) else torch.zeros((), device=dev)
        if lc.real_mask_weight > 0:
            terms["real_mask"] = lc.real_mask_weight * (
                L.mask_loss(views["x_u"]["mask_logits"], batch["x_u_mask"].to(dev), batch["x_u_ignore"].to(dev))
                + L.mask_loss(views["x_n"]["mask_logits"], batch["x_n_mask"].to(dev), batch["x_n_ignore"].to(dev)))
        terms["valid_fraction"] = valid.float().mean().detach()
        return terms

    def total(self, terms: dict) -> torch.Tensor:
        """Eq. (15) (with the mask terms); entries missing from ``terms`` count 0."""
        lc = self.cfg.loss
        get = lambda k: terms.get(k, 0.0)  # noqa: E731
        extra = lc.mask_weight * get("mask") + get("real_mask") + get("real_key") + get("real_off") \
            + lc.mask_weight * get("real_mask_sup")
        return L.total_self_loss(get("key"), get("off"), get("dual"), get("align"), lc.lambda_1, lc.lambda_2, extra)


# --------------------------------------------------------------------------------------------
def load_object(cfg: DscPoseNetConfig, obj_id: int | None = None):
    """(mesh, keypoints_3d [9,3] metres) of ``obj_id`` (default ``cfg.obj_id``)."""
    from ..objects.keypoints import object_keypoints
    from ..objects.mesh import load_mesh

    obj_id = cfg.obj_id if obj_id is None else int(obj_id)
    if cfg.models_dir:
        mesh = load_mesh(resolve_path(cfg.models_dir) / f"obj_{obj_id:06d}.ply", 0.001)
    else:
        from ..objects.registry import ObjectRegistry

        mesh = ObjectRegistry.from_yaml(resolve_path(cfg.objects_file))[obj_id].mesh
    keypoints = object_keypoints(mesh, cfg.model.n_keypoints - 1)
    return mesh, keypoints


@torch.no_grad()
def calibrate_view_statistics(model: DscPoseNet, batches) -> int:
    """Recompute every BatchNorm's per-scale running statistics as the plain average over ``batches``
    (dicts with ``u_image`` and ``n_image`` uint8 [B,3,H,W], e.g. a ``SyntheticPoseDataset`` loader);
    weights are unchanged. For a checkpoint trained before the statistics were kept per scale (its
    shared statistics average both scales). Returns the number of batches used."""
    norms = [m for m in model.modules() if isinstance(m, ScaleSpecificBatchNorm2d)]
    saved_momentum = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        for view in VIEW_SCALE_OF_TAG.values():
            getattr(m, f"running_mean_{view}").zero_()
            getattr(m, f"running_var_{view}").fill_(1)
            getattr(m, f"num_batches_tracked_{view}").zero_()
        m.momentum = None  # cumulative average over the batches
    model.train()
    count = 0
    try:
        for batch in batches:
            for tag, view in VIEW_SCALE_OF_TAG.items():
                model(model.normalise(batch[f"{tag}_image"].to(next(model.parameters()).device)), view=view)
            count += 1
    finally:
        for m, momentum in zip(norms, saved_momentum):
            m.momentum = momentum
        model.train(was_training)
    return count


def save(path: Path, trainer: DscPoseNetTrainer, optimiser, stage: str, step: int, cfg: DscPoseNetConfig,
         history: list) -> None:
    """Called on every rank: rank 0's buffers go to all ranks, then rank 0 alone writes."""
    distributed.sync_buffers(trainer.model)
    if not distributed.is_main():
        return
    # one object: keypoints [N,3]; a shared network: [O,N,3] in obj_ids' order (export_object splits it)
    keypoints = (trainer.keypoints_3d[0] if trainer.single else trainer.keypoints_3d).cpu()
    write_checkpoint(path, METHOD, to_dict(cfg.model), cfg.object_ids(), trainer.model.state_dict(),
                     inference={"keypoints_3d": keypoints}, train_config=to_dict(cfg),
                     resume={"stage": stage, "step": int(step), "history": json.dumps(history[-2000:]),
                             "optimizer": optimiser.state_dict() if optimiser is not None else {}})


def train_stage(trainer: DscPoseNetTrainer, stage: str, syn_iter, real_iter, opt: DscOptimConfig, out_dir: Path | None,
                start_step: int = 0, optimiser=None, history: list | None = None, progress: bool = True,
                logger: TrainLogger | None = None):
    """Run ``opt.steps`` steps of ``stage`` ("lb" | "self"); returns (history, optimiser).
    TensorBoard steps count on across stages (``lb.steps`` + step in stage ``self``)."""
    history = history if history is not None else []
    model = trainer.model
    optimiser = optimiser or torch.optim.Adam(model.parameters(), lr=opt.lr)
    model.train()
    global_offset = trainer.cfg.lb.steps if stage == "self" and "lb" in trainer.cfg.stages else 0
    bar = tqdm(range(start_step, opt.steps), desc=f"dsc_posenet {stage}",
               disable=not progress or not distributed.is_main())
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = _lr(opt, step)
        warm = stage == "lb" and step < opt.warmup_steps
        terms = trainer.synthetic_losses(next(syn_iter), offsets_only=warm)
        if stage == "self":
            terms.update(trainer.real_losses(next(real_iter)))
        loss = trainer.total(terms)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if opt.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opt.grad_clip)
        optimiser.step()
        record = {"stage": stage, "step": step, "loss": loss.item()}
        record.update({k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()})
        history.append(record)
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k not in ("stage", "step")})
        if logger is not None:
            done = global_offset + step + 1
            if logger.wants_scalars(done):
                logger.scalars(done, {k: v for k, v in record.items() if k not in ("stage", "step")}, f"loss_{stage}")
                logger.scalars(done, {"lr": optimiser.param_groups[0]["lr"]})
            if logger.wants_image(done):
                logger.image("sample/keypoints_true_green_predicted_red", done, trainer.sample_picture())
        if out_dir is not None and trainer.cfg.checkpoint_every and (step + 1) % trainer.cfg.checkpoint_every == 0:
            save(out_dir / "checkpoints" / "dsc_last.pt", trainer, optimiser, stage, step + 1, trainer.cfg, history)
    return history, optimiser


def load_backbone_from_segmentation(model: DscPoseNet, path) -> int:
    """Copy the ResNet encoder of a segmentation checkpoint (``training.segmentation``) into the
    stem and stages of ``model``; returns the number of tensors copied. The ResNets must match."""
    checkpoint = read_checkpoint(path, "segmentation")
    if checkpoint.network.get("encoder") != model.config.backbone:
        raise ConfigError(f"{path}: segmentation encoder {checkpoint.network.get('encoder')!r}, "
                          f"DSC-PoseNet backbone {model.config.backbone!r}: they must be the same ResNet")
    names = {"conv1": "stem.0", "bn1": "stem.1"} | {f"layer{k + 1}": f"stages.{k}" for k in range(len(model.stages))}
    prefix = "net.encoder."
    mapped = {}
    for key, value in checkpoint.weights.items():
        if not key.startswith(prefix):
            continue
        head, _, rest = key[len(prefix):].partition(".")
        if head in names:
            mapped[f"{names[head]}.{rest}"] = value
    if not mapped:
        raise ConfigError(f"{path}: no ResNet encoder weights found")
    result = model.load_state_dict(mapped, strict=False)
    wanted = {k for k in model.state_dict() if k.startswith(("stem.", "stages."))}
    missing = sorted(wanted & set(result.missing_keys))
    if missing or result.unexpected_keys:
        raise ConfigError(f"{path}: encoder does not fit the backbone (missing {missing[:3]}, "
                          f"unexpected {result.unexpected_keys[:3]})")
    return len(mapped)


def run_dsc_posenet(config, out: str | None = None, resume: str | None = None, command: str = "") -> dict:
    """Entry point of stage ``dsc_posenet`` (``training/cli.py``): LB then Self, per ``stages``."""
    cfg: DscPoseNetConfig = config.dsc_posenet
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir = resolve_path(out or config.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    obj_ids = cfg.object_ids()
    shared = bool(cfg.obj_ids)
    if shared and cfg.model.n_objects != len(obj_ids):
        raise ConfigError(f"dsc_posenet.model.n_objects must be len(obj_ids) = {len(obj_ids)} for one shared network")
    loaded = [load_object(cfg, o) for o in obj_ids]
    meshes, keypoints = [m for m, _ in loaded], [k for _, k in loaded]
    real_root = resolve_path(cfg.real.dataset) if cfg.real.dataset else bop_io.default_lmo_dir()
    backgrounds = None
    if cfg.synthetic.real_backgrounds:  # unlabeled real training frames (object boxes hidden) as backgrounds
        backgrounds = real_background_frames(str(real_root), cfg.real.scene_id, cfg.real.splits_file,
                                             cfg.real.train_split, obj_ids, cfg.real.max_loosening,
                                             cfg.real.box_seed)
    # "{obj_id}" in synthetic.dir: one render set per object from a single configuration file
    syn_cfg = dataclasses.replace(cfg.synthetic, dir=cfg.synthetic.dir.replace("{obj_id}", str(cfg.obj_id)))
    syn_root = ensure_synthetic(syn_cfg, obj_ids, real_root, backgrounds)
    data_seed = distributed.rank_seed(config.seed)  # DDP: every rank draws its own batches
    syn_sets = [SyntheticPoseDataset(synthetic_instances(syn_root, o, syn_cfg.split, syn_cfg.min_visib_fract,
                                                         syn_cfg.min_px), k, cfg.model, cfg.augment, data_seed)
                for o, k in zip(obj_ids, keypoints)]
    syn = IndexedObjects(syn_sets) if shared else syn_sets[0]
    # the differentiable renderer only serves the alignment term (eq. 12-14): none without it
    needs_renderer = "self" in cfg.stages and cfg.real.mode == "pseudo" and cfg.loss.lambda_2 > 0
    trainer = DscPoseNetTrainer(cfg, np.stack(keypoints) if shared else keypoints[0],
                                (meshes if shared else meshes[0]) if needs_renderer else None, config.device)
    start_stage, start_step, state = cfg.stages[0], 0, None
    history: list = []
    init = resume or cfg.init_checkpoint
    if cfg.init_backbone and not init:
        loaded = load_backbone_from_segmentation(trainer.model, resolve_path(cfg.init_backbone))
        print(f"backbone: {loaded} tensors from {cfg.init_backbone}", flush=True)
    if init:
        checkpoint = read_checkpoint(resolve_path(init), METHOD)
        if checkpoint.obj_ids != obj_ids:
            raise ConfigError(f"{init}: a DSC-PoseNet of objects {checkpoint.obj_ids}, the config trains {obj_ids}")
        trainer.model.load_state_dict(checkpoint.weights)
        if resume:
            progress = resume_state(checkpoint, resume)
            start_stage, start_step, state = progress["stage"], int(progress["step"]), progress.get("optimizer")
            history = json.loads(progress.get("history", "[]"))
    results = {"command": command, "obj_id": obj_ids[0], "obj_ids": obj_ids, "n_synthetic": len(syn), "stages": {}}
    logger = TrainLogger(out_dir / "tb", cfg.log_every, cfg.image_every)
    for stage in cfg.stages[cfg.stages.index(start_stage):]:
        opt = cfg.lb if stage == "lb" else cfg.self_stage
        real_iter = None
        if stage == "self":
            from ..data.scene_boxes import split_image_ids

            im_ids = split_image_ids(real_root, cfg.real.splits_file, cfg.real.train_split,
                                     bop_io.scene_dir(real_root, cfg.real.scene_id))[: cfg.real.max_images or None]
            pseudo = resolve_path(cfg.real.pseudo_dir) if cfg.real.pseudo_dir else None
            real_sets = [RealPoseDataset(real_instances(real_root, cfg.real.scene_id, im_ids, o, pseudo, cfg.real.mode,
                                                        cfg.real.box_seed, cfg.real.max_loosening),
                                         k, cfg.model, cfg.augment, cfg.loss.align_size, data_seed)
                         for o, k in zip(obj_ids, keypoints)]
            empty = [o for o, r in zip(obj_ids, real_sets) if len(r) == 0]
            if empty:
                raise ConfigError(f"no real instances of objects {empty} (pseudo_dir {pseudo})")
            real = IndexedObjects(real_sets) if shared else real_sets[0]
            results["n_real"] = len(real)
            real_iter = _cycle(real, opt.real_batch_size, data_seed + 1, cfg.workers)
        optimiser = torch.optim.Adam(trainer.model.parameters(), lr=opt.lr)
        if state and stage == start_stage:
            optimiser.load_state_dict(state)
        t_stage = time.time()
        history, optimiser = train_stage(trainer, stage, _cycle(syn, opt.batch_size, data_seed, cfg.workers), real_iter,
                                         opt, out_dir, start_step if stage == start_stage else 0, optimiser, history,
                                         logger=logger)
        save(out_dir / "checkpoints" / f"dsc_{stage}.pt", trainer, optimiser, stage, opt.steps, cfg, history)
        save(out_dir / "checkpoints" / "dsc_last.pt", trainer, optimiser, stage, opt.steps, cfg, history)
        last = [h for h in history if h["stage"] == stage][-20:]
        results["stages"][stage] = {"seconds": time.time() - t_stage, "steps": opt.steps,
                                    "final_mean": {k: float(np.mean([h[k] for h in last if k in h]))
                                                   for k in last[-1] if k not in ("stage", "step")} if last else {}}
        start_step = 0
    results["seconds"] = time.time() - t0
    logger.close()
    if distributed.is_main():
        bop_io.atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
        bop_io.atomic_write_text(out_dir / "history.json", json.dumps(history) + "\n")
    return results


def export_object(checkpoint: Checkpoint, obj_id: int) -> Checkpoint:
    """One object's single-object DSC-PoseNet checkpoint (what ``model_from_checkpoint`` and the
    pipeline load) from a shared network's checkpoint: the same trunk and decoder, the object's own
    output channels of the head, ``n_objects`` 1; weights only (no optimiser state or history)."""
    ids = list(checkpoint.obj_ids)
    if int(obj_id) not in ids:
        raise ConfigError(f"object {obj_id} is not among the network's objects {ids}")
    k = ids.index(int(obj_id))
    network = dict(checkpoint.network)
    n_objects = int(network.get("n_objects", 1))
    per = 1 + 3 * int(network.get("n_keypoints", 9))
    weights = {}
    for key, value in checkpoint.weights.items():
        if key in ("head.weight", "head.bias") and n_objects > 1:
            value = value[k * per:(k + 1) * per].clone()
        weights[key] = value
    network["n_objects"] = 1
    keypoints = checkpoint.inference["keypoints_3d"]
    train_config = dict(checkpoint.train_config)
    train_config.update(obj_id=int(obj_id), obj_ids=[], model=network)
    progress = {k_: v for k_, v in checkpoint.resume.items() if k_ in ("stage", "step")}
    provenance = dict(checkpoint.provenance) | {"shared_with": ids} | ({"progress": progress} if progress else {})
    return Checkpoint(METHOD, network, [int(obj_id)], weights,
                      {"keypoints_3d": keypoints[k] if keypoints.dim() == 3 else keypoints}, train_config, provenance,
                      {}, checkpoint.compact)


def export_objects(src, out_dir) -> list[Path]:
    """Every object of a (shared) checkpoint ``src`` as ``out_dir/obj_XXXXXX.pt`` (atomic saves)."""
    checkpoint = read_checkpoint(src, METHOD)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for obj_id in checkpoint.obj_ids:
        path = out_dir / f"obj_{obj_id:06d}.pt"
        save_checkpoint(path, export_object(checkpoint, obj_id))
        written.append(path)
    return written


if __name__ == "__main__":  # python -m dsc_pose_core.training.dsc_posenet export SRC OUT_DIR
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "export":
        raise SystemExit("usage: python -m dsc_pose_core.training.dsc_posenet export SHARED.pt OUT_DIR")
    for written in export_objects(sys.argv[2], sys.argv[3]):
        print(written)
