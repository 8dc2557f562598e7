"""Self6D trainer (self6d sec. 3-4): stage ``synthetic`` (eq. 2-3) then stage ``self`` (eq. 4-11).

* ``synthetic``: source-domain ROI crops (``data.roi_crops``, rendered by this package): visible-mask
  BCE + the point-matching pose loss (eq. 3, distances in object diameters so one weight serves every
  object). The paper's focal and GIoU terms train its FCOS detector; boxes come from the detections
  topic here, so there is no detector to train.
* ``self``: unlabeled crops of the target domain. The pose predicted on each crop is rendered with
  the differentiable renderer (RGB, depth, mask at the crop's K' = A K) and compared with the observed
  crop: recalibrated mask CE against the predicted mask M^P (eq. 4), LAB colour without L (eq. 5),
  MS-SSIM (eq. 6), perceptual (eq. 7: ``loss.perceptual_features`` "imagenet", the frozen ImageNet
  EfficientNet-Lite0 of the registry wheel at strides 2-16, as the paper's frozen ImageNet network; or
  "synthetic_stage", a frozen copy of the model's own trunk after the synthetic stage, rebuilt from
  ``self6d_synthetic.pt`` when a run resumes inside the self stage), and, with depth, the chamfer
  distance of the back-projected visible clouds (eq. 9-11). L_self = L_visual + eta L_geom (eq. 8).
  Every step also takes one source batch with the synthetic loss (``loss.synthetic_weight``; 0 turns it
  off): on a CPU budget of a few hundred steps it keeps the heads from drifting while the
  self-supervised terms adapt the network to the target images (the paper trains stage 2 on real data
  only, with a far larger budget).
  ``mask_source``: ``model`` (M^P = the network's own mask on the crop, detached, as the paper) or
  ``dataset`` (the crop set's mask, e.g. the segmentation stage's pseudo masks on LM-O).
  ``unlabeled``: ``target`` (synthetic target-domain RGB-D, the RGB-D experiment) or ``lmo`` (LM-O
  ``train_real`` RGB with pseudo masks: the visual-only variant, eq. 4-8, no depth).

Checkpoints (atomic, weights-only loadable): ``OUT/checkpoints/self6d_{stage}.pt`` and
``self6d_last.pt``: weights, optimiser state, stage, step, the config, the object id and diameter.
``OUT/eval_{stage}.json`` holds the scores on the held-out set after each stage.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data import bop_io
from ..data.roi_crops import CropAugmentConfig, augment_crops, ensure_synthetic_crops, load_crops, make_lmo_crops
from ..geometry.camera import crop_intrinsics
from ..losses import self6d as L
from ..models.self6d import METHOD, Self6dModelConfig, Self6dNet, decode_pose, model_from_checkpoint
from ..checkpoint import read_checkpoint
from ..typed_config import ConfigError, to_dict
from .common import resolve_path, resume_state, write_checkpoint

STAGE_NAMES = ("synthetic", "self")
UNLABELED = ("target", "lmo")
MASK_SOURCES = ("model", "dataset")
PERCEPTUAL_FEATURES = ("imagenet", "synthetic_stage")  # eq. (7)'s frozen network (Self6dLossConfig)
PERCEPTUAL_TRUNK = "efficientnet_lite0"  # its trunk when "imagenet" (models.backbone)


@dataclass
class Self6dDataConfig:
    models_dir: str = ""  # BOP models folder ("" = LM-O's); meshes in millimetres
    cache_dir: str = "out/self6d_data"  # ROI crop sets (made once, reused while the settings match)
    source_images: int = 1000  # rendered source-domain images (stage synthetic)
    source_seed: int = 0
    target_images: int = 400  # unlabeled target-domain RGB-D images (stage self, unlabeled: target)
    target_seed: int = 1
    test_images: int = 150  # held-out target-domain images with ground truth (scoring only)
    test_seed: int = 2
    distance: tuple[float, float] = (0.5, 1.1)  # object distance range, metres
    lmo_dataset: str = ""  # LM-O root ("" = ../shared/data/lmo) for unlabeled: lmo and lmo_eval
    lmo_pseudo_dir: str = "out/lmo_seg/pseudo/iter_5"  # the segmentation stage's pseudo masks (train_real)
    lmo_train_split: str = "train_real"
    lmo_eval_split: str = "val"
    lmo_eval: bool = False  # also score on LM-O lmo_eval_split (real RGB, ground-truth poses)


@dataclass
class Self6dLossConfig:
    mask_bce: float = 1.0  # lambda_mask, eq. (2)
    pose: float = 1.0  # lambda_pose, eq. (2); eq. (3) in object diameters
    model_points: int = 500
    mask: float = 1.0  # eq. (8): L_mask weight (the paper's is 1)
    lab: float = 0.05  # alpha
    ms_ssim: float = 1.0  # beta
    perceptual: float = 0.2  # gamma
    # eq. (7)'s frozen features: "imagenet" (the registry wheel's EfficientNet-Lite0, strides 2-16) or
    # "synthetic_stage" (the model's own trunk as the synthetic stage left it)
    perceptual_features: str = "imagenet"
    geom: float = 10.0  # eta; chamfer of clouds in object diameters (squared)
    synthetic_weight: float = 1.0  # source batch with eq. (2) every self step (0 = off)
    mask_source: str = "model"  # M^P: "model" | "dataset"
    render_faces: int = 500  # decimated mesh for the CPU differentiable renderer
    faces_per_pixel: int = 30
    sigma_px: float = 0.5
    max_points: int = 1024  # per cloud, eq. (9)


@dataclass
class Self6dOptimConfig:
    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    lr_min: float = 1e-5  # cosine decay to this


@dataclass
class Self6dConfig:
    objects_file: str = "config/objects.yaml"
    obj_id: int = 5
    stages: list[str] = field(default_factory=lambda: ["synthetic", "self"])
    unlabeled: str = "target"  # stage self's data: "target" (RGB-D) | "lmo" (real RGB, visual terms only)
    init_checkpoint: str = ""  # start from these weights (e.g. a synthetic-stage checkpoint) instead of scratch
    model: Self6dModelConfig = field(default_factory=Self6dModelConfig)
    data: Self6dDataConfig = field(default_factory=Self6dDataConfig)
    loss: Self6dLossConfig = field(default_factory=Self6dLossConfig)
    augment: CropAugmentConfig = field(default_factory=CropAugmentConfig)  # labelled source crops only
    synthetic: Self6dOptimConfig = field(default_factory=lambda: Self6dOptimConfig(steps=1500, batch_size=32))
    self_stage: Self6dOptimConfig = field(default_factory=lambda: Self6dOptimConfig(steps=300, batch_size=8, lr=1e-4))
    checkpoint_every: int = 100
    log_every: int = 20  # TensorBoard scalars (losses, lr) every N steps (OUT/tb)
    image_every: int = 100  # TensorBoard sample picture every N steps (0 = never)
    progress: bool = True

    def validate(self) -> None:
        for s in self.stages:
            if s not in STAGE_NAMES:
                raise ConfigError(f"self6d.stages: {s!r} is not one of {STAGE_NAMES}")
        if self.unlabeled not in UNLABELED:
            raise ConfigError(f"self6d.unlabeled must be one of {UNLABELED}")
        if self.loss.mask_source not in MASK_SOURCES:
            raise ConfigError(f"self6d.loss.mask_source must be one of {MASK_SOURCES}")
        if self.loss.perceptual_features not in PERCEPTUAL_FEATURES:
            raise ConfigError(f"self6d.loss.perceptual_features must be one of {PERCEPTUAL_FEATURES}")
        try:
            self.model.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


# --------------------------------------------------------------------------------------------
@dataclass
class ObjectModel:
    obj_id: int
    mesh: object
    diameter: float
    points: torch.Tensor  # [P,3] model points, metres
    symmetries: tuple[torch.Tensor, torch.Tensor] | None
    symmetric: bool


def load_object(cfg: Self6dConfig, n_points: int) -> ObjectModel:
    from ..objects.models_info import load_models_info
    from ..objects.mesh import load_mesh
    from .deepim import symmetry_tensors

    if cfg.data.models_dir:
        models_dir = resolve_path(cfg.data.models_dir)
        mesh = load_mesh(models_dir / f"obj_{cfg.obj_id:06d}.ply", 0.001)
        info_path = models_dir / "models_info.json"
        info = load_models_info(info_path).get(cfg.obj_id) if info_path.is_file() else None
        diameter = info.diameter if info is not None else mesh.diameter()
    else:
        from ..objects.registry import ObjectRegistry

        entry = ObjectRegistry.from_yaml(resolve_path(cfg.objects_file))[cfg.obj_id]
        mesh, info, diameter = entry.mesh, entry.model_info, entry.diameter
    rng = np.random.default_rng(0)
    pick = rng.choice(len(mesh.vertices), size=min(n_points, len(mesh.vertices)), replace=False)
    symmetries = symmetry_tensors(info)
    return ObjectModel(cfg.obj_id, mesh, float(diameter), torch.as_tensor(mesh.vertices[pick], dtype=torch.float32),
                       symmetries, symmetries is not None)


def models_dir_of(cfg: Self6dConfig) -> str:
    return str(resolve_path(cfg.data.models_dir)) if cfg.data.models_dir else str(bop_io.default_lmo_dir() / "models")


def to_tensors(crops: dict) -> dict:
    out = {k: torch.as_tensor(np.ascontiguousarray(crops[k])) for k in ("rgb", "depth", "mask", "window", "K",
                                                                        "image_size", "R", "t")}
    out["rgb"] = out["rgb"].permute(0, 3, 1, 2).contiguous()  # uint8 [N,3,S,S]
    out["K"] = out["K"].float()
    out["R"] = out["R"].float()
    out["t"] = out["t"].float()
    return out


def batches(data: dict, batch_size: int, seed: int, augment: CropAugmentConfig | None = None):
    """Endless random batches (a new permutation per epoch), augmented when ``augment`` is given."""
    n = data["rgb"].shape[0]
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[i:i + batch_size]
            batch = {k: v[idx] for k, v in data.items()}
            yield augment_crops(batch, augment, gen) if augment is not None else batch


class Self6dTrainer:
    def __init__(self, cfg: Self6dConfig, obj: ObjectModel, device="cpu", model: Self6dNet | None = None):
        from ..render.differentiable import DifferentiableRenderer

        self.cfg, self.obj, self.device = cfg, obj, torch.device(device)
        self.model = (model or Self6dNet(cfg.model)).to(self.device)
        lc = cfg.loss
        self.renderer = DifferentiableRenderer(faces_per_pixel=lc.faces_per_pixel, sigma_px=lc.sigma_px,
                                               device=self.device)
        self.renderer.add_object(0, obj.mesh, target_faces=lc.render_faces)
        self.ms_ssim = L.MsSsimLoss().to(self.device)
        self.feature_net = None  # frozen trunk for eq. (7), set by freeze_perceptual_features()
        self.last_sample = None  # (observed RGB, rendered RGB or mask probability) of the last batch, for logs
        self.points = obj.points.to(self.device)

    def freeze_perceptual_features(self, trunk_weights: dict | None = None) -> None:
        """eq. (7)'s frozen feature extractor (``loss.perceptual_features``): the ImageNet EfficientNet-Lite0,
        or a copy of the model's trunk as it is now (the end of the synthetic stage) or as ``trunk_weights``
        (the ``trunk.`` entries of a Self6D state dict) give it."""
        if self.cfg.loss.perceptual_features == "imagenet":
            self.feature_net = imagenet_feature_levels(self.device)
            return
        trunk = copy.deepcopy(self.model.trunk).eval()
        if trunk_weights is not None:
            trunk.load_state_dict({k[len("trunk."):]: v for k, v in trunk_weights.items() if k.startswith("trunk.")})
        for p in trunk.parameters():
            p.requires_grad_(False)
        from ..models.self6d import normalise_rgb

        self.feature_net = lambda images: trunk.levels(normalise_rgb(images))

    def predict(self, batch: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
        dev = self.device
        out = self.model(batch["rgb"].to(dev), batch["window"].to(dev), batch["image_size"].to(dev))
        R, t = decode_pose(out["rot6d"], out["offsets"], batch["window"].to(dev), batch["K"].to(dev), self.obj.diameter)
        return out, R, t

    def synthetic_losses(self, batch: dict) -> dict:
        """eq. (2)-(3) on a labelled source batch."""
        dev = self.device
        out, R, t = self.predict(batch)
        pose = L.pose_loss(R, t, batch["R"].to(dev), batch["t"].to(dev), self.points, self.obj.symmetries)
        self.last_sample = ("mask", batch["rgb"][:4], torch.sigmoid(out["mask_logits"][:4]).detach().cpu())
        return {"mask_bce": L.mask_bce(out["mask_logits"], batch["mask"].to(dev) > 127).mean(),
                "pose": (pose / self.obj.diameter).mean()}

    def self_losses(self, batch: dict) -> dict:
        """eq. (4)-(11) on an unlabeled batch (R, t of the batch are never read)."""
        dev, lc, size = self.device, self.cfg.loss, self.cfg.model.input_size
        out, R, t = self.predict(batch)
        K_crop = crop_intrinsics(batch["K"].to(dev), batch["window"].to(dev), size, size)
        render = self.renderer.render_rgbd(K_crop, 0, R, t, size, size)
        observed = batch["rgb"].to(dev).float() / 255.0
        self.last_sample = ("render", batch["rgb"][:4], render.rgb[:4].detach().cpu())
        if lc.mask_source == "dataset":
            mask_pred = (batch["mask"].to(dev) > 127).float()
        else:
            mask_pred = torch.sigmoid(out["mask_logits"]).detach()
        terms = {}
        if lc.mask > 0:
            terms["mask"] = L.recalibrated_mask_loss(render.silhouette, mask_pred).mean()
        if lc.lab > 0:
            terms["lab"] = L.lab_loss(observed, render.rgb, mask_pred, render.silhouette.detach()).mean()
        if lc.ms_ssim > 0:
            terms["ms_ssim"] = self.ms_ssim(observed, render.rgb, mask_pred).mean()
        if lc.perceptual > 0:
            if self.feature_net is None:
                self.freeze_perceptual_features()
            terms["perceptual"] = L.perceptual_loss(self.feature_net, observed, render.rgb, mask_pred).mean()
        has_depth = bool((batch["depth"] > 0).any())
        if lc.geom > 0 and has_depth:
            terms["geom"] = L.geometric_loss(batch["depth"].to(dev).float(), mask_pred, render.depth,
                                             (render.depth > 0).float(), K_crop, self.obj.diameter,
                                             lc.max_points).mean()
        return terms

    def total_synthetic(self, terms: dict) -> torch.Tensor:
        lc = self.cfg.loss
        return lc.mask_bce * terms["mask_bce"] + lc.pose * terms["pose"]  # eq. (2) without detector terms

    def total_self(self, terms: dict) -> torch.Tensor:
        """L_self = L_mask + alpha L_ab + beta L_ms-ssim + gamma L_perceptual (eq. 8) + eta L_geom."""
        lc = self.cfg.loss
        weights = {"mask": lc.mask, "lab": lc.lab, "ms_ssim": lc.ms_ssim, "perceptual": lc.perceptual,
                   "geom": lc.geom}
        total = torch.zeros((), device=self.device)
        for name, value in terms.items():
            total = total + weights[name] * value
        return total


# --------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(trainer: Self6dTrainer, data: dict, batch_size: int = 64) -> dict:
    """ADD(-S) < 0.1 d, 5 cm 5 deg and median errors of the model's poses on a crop set with poses."""
    from ..eval import metrics

    trainer.model.eval()
    n = data["rgb"].shape[0]
    Rs, ts = [], []
    for i in range(0, n, batch_size):
        batch = {k: v[i:i + batch_size] for k, v in data.items()}
        _, R, t = trainer.predict(batch)
        Rs.append(R.cpu().double().numpy())
        ts.append(t.cpu().double().numpy())
    trainer.model.train()
    R_e, t_e = np.concatenate(Rs), np.concatenate(ts)
    R_g, t_g = data["R"].double().numpy(), data["t"].double().numpy()
    pts = trainer.obj.points.double().numpy()
    err = metrics.add_s_batch(R_e, t_e, R_g, t_g, pts) if trainer.obj.symmetric else metrics.add_batch(R_e, t_e, R_g, t_g, pts)
    rot = metrics.rotation_error_deg_batch(R_e, R_g)
    trans = metrics.translation_error_batch(t_e, t_g)
    return {"n": int(n), "ADD(-S)_0.1d": float(np.mean(err < 0.1 * trainer.obj.diameter)),
            "5cm5deg": float(np.mean((rot < 5.0) & (trans < 0.05))),
            "median_rot_deg": float(np.median(rot)), "median_trans_cm": float(np.median(trans) * 100.0),
            "median_depth_err_cm": float(np.median(np.abs(t_e[:, 2] - t_g[:, 2])) * 100.0)}


def _lr(opt: Self6dOptimConfig, step: int) -> float:
    return opt.lr_min + 0.5 * (opt.lr - opt.lr_min) * (1.0 + math.cos(math.pi * min(step, opt.steps) / max(opt.steps, 1)))


def save(path: Path, trainer: Self6dTrainer, optimiser, stage: str, step: int, cfg: Self6dConfig, history: list) -> None:
    write_checkpoint(path, METHOD, to_dict(cfg.model), [cfg.obj_id], trainer.model.state_dict(),
                     inference={"diameter": float(trainer.obj.diameter)}, train_config=to_dict(cfg),
                     resume={"stage": stage, "step": int(step), "history": json.dumps(history[-2000:]),
                             "optimizer": optimiser.state_dict() if optimiser is not None else {}})


def sample_picture(sample) -> np.ndarray:
    """Observed crops (top) over the predicted mask tinted green (synthetic stage) or the render at the
    predicted pose (self stage), uint8 [2S, 4S, 3]."""
    from .tensorboard_log import mask_overlay, tile

    kind, rgb, other = sample
    observed = [img.permute(1, 2, 0).numpy() for img in rgb]
    if kind == "mask":
        below = [mask_overlay(img, m.numpy() > 0.5) for img, m in zip(observed, other)]
    else:
        below = [(img.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8) for img in other]
    return tile(observed + below, columns=len(observed))


def train_stage(trainer: Self6dTrainer, stage: str, labelled, unlabeled, opt: Self6dOptimConfig, out_dir: Path | None,
                start_step: int = 0, optimiser=None, history: list | None = None) -> list:
    from .tensorboard_log import TrainLogger

    cfg = trainer.cfg
    logger = TrainLogger(out_dir / "tb", cfg.log_every, cfg.image_every, enabled=out_dir is not None) \
        if out_dir is not None else None
    history = history if history is not None else []
    if optimiser is None:
        optimiser = torch.optim.Adam(trainer.model.parameters(), lr=opt.lr)
    trainer.model.train()
    bar = tqdm(range(start_step, opt.steps), desc=f"self6d {stage}", disable=not cfg.progress)
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = _lr(opt, step)
        t0 = time.perf_counter()
        terms = {}
        loss = torch.zeros(())
        if stage == "synthetic" or cfg.loss.synthetic_weight > 0:
            syn = trainer.synthetic_losses(next(labelled))
            weight = 1.0 if stage == "synthetic" else cfg.loss.synthetic_weight
            loss = loss + weight * trainer.total_synthetic(syn)
            terms.update({f"syn_{k}": v for k, v in syn.items()})
        if stage == "self":
            real = trainer.self_losses(next(unlabeled))
            loss = loss + trainer.total_self(real)
            terms.update(real)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 10.0)
        optimiser.step()
        record = {"stage": stage, "step": step + 1, "loss": float(loss.detach()), "lr": optimiser.param_groups[0]["lr"],
                  "seconds": time.perf_counter() - t0, **{k: float(v.detach()) for k, v in terms.items()}}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        if logger is not None and logger.wants_scalars(step + 1):
            logger.scalars(step + 1, {k: v for k, v in record.items() if k not in ("stage", "step")}, f"{stage}")
        if logger is not None and logger.wants_image(step + 1) and trainer.last_sample is not None:
            logger.image(f"{stage}/sample", step + 1, sample_picture(trainer.last_sample))
        if out_dir is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == opt.steps):
            save(out_dir / "checkpoints" / "self6d_last.pt", trainer, optimiser, stage, step + 1, cfg, history)
    if out_dir is not None:
        save(out_dir / "checkpoints" / f"self6d_{stage}.pt", trainer, None, stage, opt.steps, cfg, history)
    if logger is not None:
        logger.close()
    return history


def load_datasets(cfg: Self6dConfig) -> dict:
    """Crop sets: ``source`` (labelled renders), ``unlabeled`` (stage self), ``test`` (held-out target
    domain, scoring) and, with ``data.lmo_eval``, ``lmo_eval`` (LM-O val, scoring)."""
    d, m = cfg.data, cfg.model
    models_dir = models_dir_of(cfg)
    cache = resolve_path(d.cache_dir)
    sets = {}
    make = lambda domain, n, seed: to_tensors(load_crops(ensure_synthetic_crops(  # noqa: E731
        cache, domain, cfg.obj_id, models_dir, n, seed, m.input_size, m.context, d.distance, cfg.progress)))
    sets["source"] = make("source", d.source_images, d.source_seed)
    sets["test"] = make("target", d.test_images, d.test_seed)
    lmo_root = resolve_path(d.lmo_dataset) if d.lmo_dataset else bop_io.default_lmo_dir()
    if "self" in cfg.stages:
        if cfg.unlabeled == "target":
            unlabeled = make("target", d.target_images, d.target_seed)
        else:
            pseudo = resolve_path(d.lmo_pseudo_dir)
            if not pseudo.is_dir():
                raise FileNotFoundError(f"{pseudo}: no pseudo masks; run the segmentation stage first "
                                        "(python training/train.py --config config/train/lmo_seg.yaml)")
            unlabeled = to_tensors(make_lmo_crops(lmo_root, d.lmo_train_split, cfg.obj_id, m.input_size, m.context,
                                                  pseudo_dir=pseudo))
        unlabeled["R"].fill_(float("nan"))  # self-supervision: never read the poses of training images
        unlabeled["t"].fill_(float("nan"))
        sets["unlabeled"] = unlabeled
    if d.lmo_eval:
        sets["lmo_eval"] = to_tensors(make_lmo_crops(lmo_root, d.lmo_eval_split, cfg.obj_id, m.input_size, m.context,
                                                     keep_poses=True))
    return sets


def synthetic_stage_weights(out_dir: Path, cfg: "Self6dConfig") -> dict | None:
    """The weights the self stage started from, for a run resumed inside it: eq. (7)'s "synthetic_stage"
    features must come from them, not from the partly self-trained network being resumed. They are the
    synthetic stage's checkpoint of this run, or ``init_checkpoint`` for a run without a synthetic stage."""
    if cfg.loss.perceptual_features != "synthetic_stage" or cfg.loss.perceptual <= 0:
        return None
    if "synthetic" not in cfg.stages and cfg.init_checkpoint:
        path = resolve_path(cfg.init_checkpoint)
    else:
        path = out_dir / "checkpoints" / "self6d_synthetic.pt"
    if not path.is_file():
        raise ConfigError(f"resuming inside the self stage needs {path} (eq. 7's features are the trunk the self "
                          "stage started from); it is missing")
    return read_checkpoint(path, METHOD).weights


def imagenet_feature_levels(device="cpu"):
    """eq. (7)'s "imagenet" features: images ``[B,3,H,W]`` in [0, 1] -> the frozen ImageNet trunk's feature maps at
    strides 2, 4, 8 and 16 (``PERCEPTUAL_TRUNK``)."""
    from ..models import backbone

    net = backbone.feature_trunk(PERCEPTUAL_TRUNK, (2, 4, 8, 16)).eval().to(device)
    for p in net.parameters():
        p.requires_grad_(False)
    return lambda images: net(backbone.normalise(images * 255.0, PERCEPTUAL_TRUNK))


def run_self6d(config, out: str | None = None, resume: str | None = None, command: str = "") -> dict:
    cfg: Self6dConfig = config.self6d
    cfg.validate()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir = resolve_path(out or config.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    obj = load_object(cfg, cfg.loss.model_points)
    sets = load_datasets(cfg)
    trainer = Self6dTrainer(cfg, obj, config.device)
    start_stage, start_step, optimiser_state, history = 0, 0, None, []
    if resume:
        checkpoint = read_checkpoint(resume, METHOD)
        if checkpoint.obj_ids != [cfg.obj_id]:
            raise ConfigError(f"{resume}: a Self6D network of object {checkpoint.obj_ids}, the config trains {cfg.obj_id}")
        progress = resume_state(checkpoint, resume)
        trainer.model.load_state_dict(checkpoint.weights)
        start_stage = cfg.stages.index(progress["stage"])
        start_step = int(progress["step"])
        optimiser_state = progress.get("optimizer") or None
        history = json.loads(progress.get("history", "[]"))
    elif cfg.init_checkpoint:
        model, checkpoint = model_from_checkpoint(resolve_path(cfg.init_checkpoint))
        obj_id = checkpoint.obj_ids[0]
        if obj_id != cfg.obj_id:
            raise ValueError(f"{cfg.init_checkpoint}: trained for object {obj_id}, not {cfg.obj_id}")
        trainer.model.load_state_dict(model.state_dict())
    results = {"command": command, "obj_id": cfg.obj_id, "unlabeled": cfg.unlabeled}
    if start_stage == 0 and start_step == 0:  # the starting weights (scratch or init_checkpoint: the LB row)
        results["init"] = {"test": evaluate(trainer, sets["test"])}
        if "lmo_eval" in sets:
            results["init"]["lmo_eval"] = evaluate(trainer, sets["lmo_eval"])
    for index in range(start_stage, len(cfg.stages)):
        stage = cfg.stages[index]
        opt = cfg.synthetic if stage == "synthetic" else cfg.self_stage
        first = index == start_stage
        labelled = batches(sets["source"], opt.batch_size, config.seed + index, cfg.augment)
        unlabeled = batches(sets["unlabeled"], opt.batch_size, config.seed + 100 + index) if stage == "self" else None
        if stage == "self":
            trainer.freeze_perceptual_features(synthetic_stage_weights(out_dir, cfg) if first and start_step > 0 else None)
        optimiser = torch.optim.Adam(trainer.model.parameters(), lr=opt.lr)
        if first and optimiser_state:
            optimiser.load_state_dict(optimiser_state)
        t0 = time.perf_counter()
        history = train_stage(trainer, stage, labelled, unlabeled, opt, out_dir, start_step if first else 0,
                              optimiser, history)
        scores = {"test": evaluate(trainer, sets["test"]), "train_seconds": time.perf_counter() - t0}
        if "lmo_eval" in sets:
            scores["lmo_eval"] = evaluate(trainer, sets["lmo_eval"])
        results[stage] = scores
        bop_io.atomic_write_text(out_dir / f"eval_{stage}.json", json.dumps(scores, indent=2))
        print(f"self6d {stage}: {json.dumps(scores)}", flush=True)
    bop_io.atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    return results
