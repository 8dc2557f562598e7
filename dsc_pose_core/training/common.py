"""What the trainers share: paths, the synthetic render sets, the real splits' frames and boxes,
and their checkpoints.

Every trainer (``training/stages.py``: segmentation, dsc_posenet, self6d, deepim) resolves its paths
with :func:`resolve_path`, renders (or reuses) its synthetic images with :func:`ensure_synthetic`
from a :class:`SyntheticDataConfig`, reads the real frames it may use (RGB and loosened 2D boxes,
never poses) with :func:`load_real_split` / :func:`real_background_frames`, and writes its
checkpoints in the package's one schema with :func:`write_checkpoint` (``dsc_pose_core.checkpoint``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import provenance
from ..checkpoint import Checkpoint, save_checkpoint
from ..data import bop_io
from ..data.backgrounds import hide_boxes
from ..data.bop_io import find_rgb, read_rgb
from ..data.boxes import DEFAULT_MAX_LOOSENING, loosen_box_xywh
from ..typed_config import ConfigError
from . import distributed


@dataclass
class RealDataConfig:
    dataset: str = ""  # BOP dataset root; "" = the LM-O data (bop_io.default_lmo_dir())
    scene_id: int = 2
    splits_file: str = "splits.json"  # {split name: [im_id, ...]} inside the dataset
    train_split: str = "train_real"
    val_split: str = "val"
    targets_file: str = "test_targets_bop19.json"  # which objects get a box; "" = every annotated one
    max_loosening: float = DEFAULT_MAX_LOOSENING
    box_seed: int = 0
    max_images: int = 0  # use only the first N images of each split (0 = all): smoke runs
    # what the real images are fine-tuned on: "pseudo" (the method: the network's own labels, eq. 1-2) or
    # "reference_upper_bound" (the reference masks rendered from the GT poses, flagged targets ignored
    # inside their box): an experiment "with real mask labels" that bounds the method, never a result of it
    labels: str = "pseudo"


@dataclass
class SyntheticDataConfig:
    dir: str = "out/synth_lmo_seg"  # BOP dataset of dsc-pose-synth; generated here if missing
    split: str = "train_synt"
    generate: bool = True
    models: str = ""  # BOP models folder for generation; "" = <real dataset>/models
    n_images: int = 400
    objects_per_image: int = 6
    distractors: int = 3
    distance: tuple[float, float] = (0.6, 1.3)
    elevation: tuple[float, float] = (0.0, 80.0)
    seed: int = 0
    rgb_ext: str = "jpg"
    min_visib_fract: float = 0.1
    min_px: int = 64
    # backgrounds: "" = the generator's kinds; real_backgrounds: the real training split's RGB frames
    # (no labels) become background photographs (kind "folder", half of the images)
    backgrounds: str = ""
    real_backgrounds: bool = False
    object_jitter: float = 0.0  # per-object colour randomisation of the renders (dsc-pose-synth --object-jitter)
    cluster_radius: float = 0.0  # > 0: objects clustered and occluding like real clutter (dsc-pose-synth --cluster-radius)



def resolve_path(path: str, base: Path | None = None) -> Path:
    """Relative paths are relative to the repository root (or ``base``)."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else (base or bop_io.repo_root()) / p



def write_box_free_backgrounds(folder: Path, frames: list[tuple[Path, list]]) -> list[Path]:
    """Each real frame with its boxes hidden as ``folder/<scene>_<name>.png`` (kept when present)."""
    written = []
    for path, boxes in frames:
        target = Path(folder) / f"{Path(path).parent.parent.name}_{Path(path).stem}.png"
        if not target.exists():
            bop_io.atomic_write_image(target, hide_boxes(read_rgb(path), boxes))
        written.append(target)
    return written


def ensure_synthetic(cfg: SyntheticDataConfig, obj_ids: list[int], real_root: Path,
                     background_images: list[tuple[Path, list]] | None = None) -> Path:
    """Generate the synthetic dataset with dsc-pose-synth when it is missing or incomplete
    (the generator resumes, so an existing complete dataset costs nothing). With
    ``cfg.real_backgrounds``, ``background_images`` (unlabeled real frames, each with the loose
    boxes of the objects being learned) are written to ``<dir>/backgrounds/`` with those boxes
    hidden (:func:`backgrounds.hide_boxes`) and used as background photographs."""
    root = resolve_path(cfg.dir)
    # a dataset may hold several scenes (e.g. shards rendered in parallel, one scene id each)
    split_dir = root / cfg.split
    scenes = sorted(p for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
    have = sum(len(list((s / "rgb").glob("*"))) for s in scenes if (s / "rgb").is_dir())
    if scenes and have >= cfg.n_images and all((s / "scene_gt_info.json").exists() for s in scenes):
        return root
    if not cfg.generate:
        raise FileNotFoundError(f"synthetic dataset {root} is missing or incomplete and generate is false")
    from ..data.synth_cli import synth_config
    from ..data.synthetic import GenerationReport, generate_dataset

    models = resolve_path(cfg.models) if cfg.models else real_root / "models"
    kinds = cfg.backgrounds
    background_dir = ""
    if cfg.real_backgrounds:
        if not background_images:
            raise ConfigError("synthetic.real_backgrounds needs the real training images")
        folder = root / "backgrounds"
        folder.mkdir(parents=True, exist_ok=True)
        if distributed.is_main():
            write_box_free_backgrounds(folder, background_images)
        kinds = kinds or "folder,noise,gradient,stripes,checker"
        background_dir = str(folder)
    settings = dict(seed=cfg.seed, objects_per_image=cfg.objects_per_image, distractors=cfg.distractors,
                    distance=cfg.distance, elevation=cfg.elevation, rgb_ext=cfg.rgb_ext, split=cfg.split,
                    background_dir=background_dir, object_jitter=cfg.object_jitter, cluster_radius=cfg.cluster_radius)
    if kinds:
        settings["backgrounds"] = kinds
    if distributed.is_main():  # DDP: one rank renders, the others wait for the finished dataset
        synth = synth_config(models, obj_ids, root, cfg.n_images, **settings)
        print(f"generating synthetic data: {cfg.n_images} images of objects {list(obj_ids)} into {root}", flush=True)
        report = GenerationReport(root)
        generate_dataset(synth, report=report)
        print(f"synthetic data: rendered {len(report.rendered)} images, skipped {len(report.skipped)} finished ones "
              f"in {report.seconds:.1f} s", flush=True)
    distributed.barrier()
    return root


@dataclass
class RealSplit:
    scene_path: Path
    im_ids: list[int]
    targets: dict[int, list[tuple[int, int, np.ndarray]]]  # im_id -> [(inst, obj_id, loose box)]
    width: int
    height: int


def real_background_frames(dataset: str, scene_id: int, splits_file: str, split: str, obj_ids: list[int],
                           max_loosening: float, box_seed: int) -> list[tuple[Path, list[np.ndarray]]]:
    """The frames of a real split with the seeded loose boxes of ``obj_ids`` (what
    :func:`ensure_synthetic` hides before using them as backgrounds)."""
    real = load_real_split(RealDataConfig(dataset=dataset, scene_id=scene_id, splits_file=splits_file,
                                          train_split=split, targets_file="", max_loosening=max_loosening,
                                          box_seed=box_seed), split, obj_ids)
    return [(find_rgb(real.scene_path, i), [box for _, _, box in real.targets[i]]) for i in real.im_ids]


def load_real_split(cfg: RealDataConfig, split: str, obj_ids: list[int], required: bool = True) -> RealSplit:
    """Images of ``split`` and, per image, the target objects with their seeded loosened boxes.

    Only the 2D boxes are read (``scene_boxes.json``, or ``bbox_visib`` of scene_gt_info with the
    obj_id order of scene_gt: :mod:`dsc_pose_core.data.scene_boxes`); never the poses. A split that is
    not there (``required`` False: the validation split) gives an empty split."""
    from ..data.scene_boxes import load_scene_boxes, split_image_ids

    root = resolve_path(cfg.dataset) if cfg.dataset else bop_io.default_lmo_dir()
    scene_path = bop_io.scene_dir(root, cfg.scene_id)
    try:
        im_ids = split_image_ids(root, cfg.splits_file, split, scene_path, required)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(str(exc)) from None
    if not im_ids:
        if required:
            raise ConfigError(f"split {split!r} of {root / cfg.splits_file} has no images")
        return RealSplit(scene_path, [], {}, 0, 0)
    if cfg.max_images:
        im_ids = im_ids[: cfg.max_images]
    boxes = load_scene_boxes(scene_path)
    wanted: dict[int, set[int]] | None = None
    if cfg.targets_file:
        wanted = {}
        for target in bop_io.load_targets(root / cfg.targets_file):
            if target.scene_id == cfg.scene_id:
                wanted.setdefault(target.im_id, set()).add(target.obj_id)
    first = read_rgb(find_rgb(scene_path, im_ids[0]))
    height, width = first.shape[:2]
    targets = {}
    for im_id in im_ids:
        # one generator per (seed, image): the same box whatever else is loaded
        rng = np.random.default_rng([cfg.box_seed, cfg.scene_id, im_id])
        entries = []
        for inst, box in enumerate(boxes.get(im_id, [])):
            loose = loosen_box_xywh(box.bbox_visib, rng, width, height, cfg.max_loosening)
            if box.obj_id not in obj_ids or box.bbox_visib[2] <= 0 or box.bbox_visib[3] <= 0:
                continue
            if wanted is not None and box.obj_id not in wanted.get(im_id, ()):
                continue
            entries.append((inst, box.obj_id, loose))
        targets[im_id] = entries
    return RealSplit(scene_path, im_ids, targets, width, height)



def resume_state(checkpoint: Checkpoint, path) -> dict:
    """The training progress a checkpoint holds to continue from; a compact copy (no optimiser, no step)
    is one clear :class:`ConfigError`."""
    if not checkpoint.resume:
        raise ConfigError(f"{path} is a compact copy without training state: resume from the run's *_last.pt "
                          "(or start from it with init_checkpoint)")
    return checkpoint.resume


def write_checkpoint(path: str | os.PathLike, method: str, network: dict, obj_ids, weights: dict, *,
                     inference: dict | None = None, train_config: dict | None = None,
                     object_names: dict | None = None, resume: dict | None = None) -> Path:
    """Write a training checkpoint in the package's schema (``checkpoint.Checkpoint``), atomically,
    with the provenance of this run (commit, machine, time, the objects' names)."""
    import time

    obj_ids = [int(o) for o in obj_ids]
    record = {"commit": provenance.git_commit(), "machine": provenance.machine(),
              "written_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "object_names": [(object_names or {}).get(o, str(o)) for o in obj_ids]}
    return save_checkpoint(path, Checkpoint(method, network, obj_ids, weights, inference or {}, train_config or {},
                                            record, resume or {}))
