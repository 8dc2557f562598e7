"""The stage chain: ``python training/train.py --config config/train/<chain>.yaml [--stages a,b] [--resume]``.

A chain config has ``stages:`` (a list, in this order: synthetic, segmentation, dsc_posenet, deepim,
self6d, eval) instead of ``stage:``, a ``data:`` section naming the objects and the real images, a
``synthetic:`` section (the renders all stages share), one section per trainer (sizes and
schedules) and an ``eval:`` section. Every stage writes into ``OUT/<stage>/``; the chain fills in
what a stage reads from the others, so a config never names an intermediate path:

=============  ==============================================  =====================================
stage          gets from the chain                             leaves for later stages
=============  ==============================================  =====================================
synthetic      data.objects_file's meshes                      OUT/synthetic/dataset (BOP)
segmentation   data (real images + boxes), the renders         pseudo/iter_T (masks, boxes), checkpoints
dsc_posenet    renders, real images, pseudo/iter_T             checkpoints/obj_XXXXXX.pt per object
deepim         data.objects_file                               checkpoints/deepim_last.pt
self6d         the objects, real images, pseudo/iter_T         checkpoints/obj_XXXXXX.pt per object
eval           every checkpoint above, data.val_split          OUT/report.md, eval/results.csv
=============  ==============================================  =====================================

The objects come from a registry (``data.objects_file``) or, for a new object, from ``data.objects``
(meshes in any units): the chain then writes ``OUT/objects/`` (a BOP models folder in millimetres
and ``objects.yaml``, :mod:`dsc_pose_core.objects.models_folder`) before any stage runs. The real
images need only RGB, ``scene_camera.json`` and 2D boxes (:mod:`dsc_pose_core.data.scene_boxes`).
Every trainer stage also leaves a compact (float16, weights-only) copy of its result in
``OUT/checkpoints/`` in the layout the pipeline and the ROS node read: ``dsc_posenet/obj_XXXXXX.pt``,
``self6d/obj_XXXXXX.pt``, ``deepim.pt``; the eval stage scores exactly those files.

Keys the chain fills are errors in a stage section (one place to set them: ``data:``/``synthetic:``).

Skipping and re-running: a stage that finishes writes ``OUT/<stage>/stage_done.json`` with the hash
of its resolved settings (its section as the chain filled it, ``data``, ``seed``) combined with the
hashes of the stages it reads from (``DEPENDS``). Bookkeeping keys (``BOOKKEEPING_KEYS``: how often
to log or checkpoint, worker counts) and device/threads/out are not hashed: they do not change what
is trained. On a later run a stage whose stamp holds the same hash is skipped with a printed line;
any change re-runs it and, through the hashes, every stage that reads its outputs. A stage that
re-runs starts from an empty ``OUT/<stage>/`` unless ``--resume`` is given and it was interrupted
with the same settings (``stage_started.json``): then its trainer continues from its last
checkpoint. The synthetic renderer is deterministic per image, so that stage always continues.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import distributed
from .. import defaults
from .stages import TrainConfig
from ..typed_config import ConfigError, from_dict, to_dict
from .deepim import DeepImConfig
from .dsc_posenet import DscPoseNetConfig
from .common import SyntheticDataConfig, ensure_synthetic, real_background_frames, resolve_path
from .segmentation import SegmentationConfig
from .self6d import Self6dConfig

CHAIN_STAGES = ("synthetic", "segmentation", "dsc_posenet", "deepim", "self6d", "eval")
# stage -> the stages whose outputs it reads (when they are in the chain)
DEPENDS = {"synthetic": (), "segmentation": ("synthetic",), "dsc_posenet": ("synthetic", "segmentation"),
           "deepim": (), "self6d": ("segmentation",), "eval": ("dsc_posenet", "deepim", "self6d")}
EXPORT_DIR = "checkpoints"  # OUT/checkpoints: the compact checkpoints in the pipeline's layout
EXPORTS = {"dsc_posenet": "dsc_posenet", "deepim": "deepim.pt", "self6d": "self6d"}  # stage -> its part of it
BOOKKEEPING_KEYS = frozenset({"checkpoint_every", "log_every", "image_every", "workers"})
DONE_STAMP = "stage_done.json"
STARTED_STAMP = "stage_started.json"
SYNTHETIC_GENERATION_KEYS = tuple(f.name for f in dataclasses.fields(SyntheticDataConfig)
                                  if f.name not in ("min_visib_fract", "min_px"))
# keys of the stage sections that the chain sets (from data:, synthetic: and earlier stages)
CHAIN_OWNED = (
    ("segmentation", "objects_file"), ("segmentation", "obj_ids"), ("segmentation", "real", "dataset"),
    ("segmentation", "real", "scene_id"), ("segmentation", "real", "splits_file"),
    ("segmentation", "real", "train_split"), ("segmentation", "real", "val_split"),
    ("segmentation", "real", "targets_file"),
    ("dsc_posenet", "objects_file"), ("dsc_posenet", "models_dir"), ("dsc_posenet", "obj_id"),
    ("dsc_posenet", "init_checkpoint"), ("dsc_posenet", "real", "dataset"), ("dsc_posenet", "real", "scene_id"),
    ("dsc_posenet", "real", "splits_file"), ("dsc_posenet", "real", "train_split"),
    ("dsc_posenet", "real", "pseudo_dir"),
    ("deepim", "objects_file"), ("deepim", "obj_ids"),
    ("self6d", "objects_file"), ("self6d", "obj_id"), ("self6d", "data", "models_dir"),
    ("self6d", "data", "cache_dir"), ("self6d", "data", "lmo_dataset"), ("self6d", "data", "lmo_pseudo_dir"),
    ("self6d", "data", "lmo_train_split"), ("self6d", "data", "lmo_eval_split"),
) + tuple((stage, "synthetic", key) for stage in ("segmentation", "dsc_posenet") for key in SYNTHETIC_GENERATION_KEYS)


@dataclass
class ChainObjectConfig:
    """A new object: its mesh in any format trimesh reads and the mesh's unit."""
    id: int  # the 2D detector's class id
    name: str
    mesh: str  # path (relative: to the repository root)
    units: str = ""  # m | cm | mm
    mesh_unit_scale: float = 0.0  # or: metres per mesh unit
    symmetry: typing.Any = None  # as in config/objects.yaml (offsets in millimetres)


@dataclass
class ChainDataConfig:
    """What a user names: the objects (a registry YAML, or new meshes with their units) and the real images."""
    objects_file: str = ""  # registry YAML; "" = config/objects.yaml, or OUT/objects/objects.yaml with objects:
    objects: list[ChainObjectConfig] = field(default_factory=list)  # new meshes (written to OUT/objects/)
    obj_ids: list[int] = field(default_factory=list)  # [] = every object of the registry
    dataset: str = ""  # BOP root of the real images; "" = LM-O (bop_io.default_lmo_dir())
    scene_id: int = 2
    splits_file: str = "splits.json"  # {split name: [im_id, ...]} inside the dataset; "" = all images train
    train_split: str = "train_real"  # RGB + 2D boxes; used without poses
    val_split: str = "val"  # evaluated when the scene has ground truth
    targets_file: str = "test_targets_bop19.json"  # which objects get a box; "" = every annotated one

    def validate(self) -> None:
        if self.objects and self.objects_file:
            raise ConfigError("data: give objects_file (a registry) or objects (new meshes), not both")
        if self.objects:
            from ..objects.models_folder import MeshSpecError, parse_specs

            try:
                parse_specs([to_dict(o) for o in self.objects])
            except MeshSpecError as exc:
                raise ConfigError(f"data.{exc}") from None

    def object_specs(self):
        from ..objects.models_folder import parse_specs

        return parse_specs([dict(to_dict(o), mesh=str(resolve_path(o.mesh))) for o in self.objects])


@dataclass
class ChainEvalConfig:
    split: str = ""  # "" = data.val_split
    init: str = defaults.INIT  # initial pose: "dsc" (the dsc_posenet stage) | "self6d" (the self6d stage) | "box"
    refine_iterations: int = defaults.REFINE_ITERATIONS  # DeepIM iterations (needs the deepim stage); 0 = none
    max_images: int = 0  # 0 = the whole split
    overlays: int = 4  # overlay pictures in the report
    box_seed: int = 0


@dataclass
class ChainConfig(TrainConfig):
    stage: str = ""  # a chain names its trainers in ``stages``
    stages: list[str] = field(default_factory=list)
    data: ChainDataConfig = field(default_factory=ChainDataConfig)
    synthetic: SyntheticDataConfig = field(default_factory=lambda: SyntheticDataConfig(dir=""))
    eval: ChainEvalConfig = field(default_factory=ChainEvalConfig)
    # self6d: (inherited from TrainConfig) the Self6D stage's section; needs self6d in stages

    def validate(self) -> None:
        if self.stage:
            raise ConfigError("a chain config has stages:, not stage:")
        unknown = [s for s in self.stages if s not in CHAIN_STAGES]
        if not self.stages or unknown:
            raise ConfigError(f"stages: {unknown or self.stages} not in {list(CHAIN_STAGES)}")
        if len(set(self.stages)) != len(self.stages) or \
                [s for s in CHAIN_STAGES if s in self.stages] != list(self.stages):
            raise ConfigError(f"stages: {self.stages}: each at most once, in the order {list(CHAIN_STAGES)}")
        # stages without a section train with the section's defaults
        if self.self6d is not None and "self6d" not in self.stages:
            raise ConfigError("the config has a self6d: section but self6d is not in stages: add it "
                              f"(order {list(CHAIN_STAGES)}) or remove the section")
        for name, cls in (("segmentation", SegmentationConfig), ("dsc_posenet", DscPoseNetConfig),
                          ("deepim", DeepImConfig), ("self6d", Self6dConfig)):
            if name in self.stages and getattr(self, name) is None:
                setattr(self, name, from_dict(cls, {}, name))
        if "self6d" in self.stages and self.self6d.unlabeled == "lmo" and "self" in self.self6d.stages:
            # Self6D's real-image crops read the pseudo masks of the segmentation stage
            if "segmentation" not in self.stages or self.segmentation.iterations < 1:
                raise ConfigError("self6d.unlabeled: lmo learns from the real images' pseudo masks: add segmentation "
                                  "to stages (iterations >= 1), or use self6d.unlabeled: target")
            if self.data.scene_id != 2:
                # training/self6d.py reads the real crops of scene 2 (LM-O's) only
                raise ConfigError(f"self6d.unlabeled: lmo reads scene 2 only (data.scene_id is {self.data.scene_id}); "
                                  "use self6d.unlabeled: target (rendered RGB-D) for this dataset")
        if "dsc_posenet" in self.stages and "self" in self.dsc_posenet.stages \
                and self.dsc_posenet.real.mode == "pseudo":
            if "segmentation" not in self.stages:
                raise ConfigError("dsc_posenet stage self learns from pseudo masks: add segmentation to stages")
            if self.segmentation.iterations < 1:
                raise ConfigError("dsc_posenet stage self needs pseudo masks: segmentation.iterations >= 1")
        if "eval" in self.stages:
            if self.eval.init not in ("dsc", "self6d", "box"):
                raise ConfigError(f"eval.init {self.eval.init!r} not in ['dsc', 'self6d', 'box']")
            if self.eval.init == "dsc" and "dsc_posenet" not in self.stages:
                raise ConfigError("eval.init: dsc needs the dsc_posenet stage (or eval.init: box)")
            if self.eval.init == "self6d" and "self6d" not in self.stages:
                raise ConfigError("eval.init: self6d needs the self6d stage (or eval.init: box)")
            if self.eval.refine_iterations > 0 and "deepim" not in self.stages:
                raise ConfigError("eval.refine_iterations > 0 needs the deepim stage (or 0)")


def parse_chain(raw: dict) -> ChainConfig:
    """A chain config mapping (bases and overrides applied) -> :class:`ChainConfig`."""
    for path in CHAIN_OWNED:
        node = raw
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        else:
            source = "synthetic:" if path[1] == "synthetic" else "data: (or an earlier stage's output)"
            raise ConfigError(f"{'.'.join(path)} is set by the chain from {source}; remove it")
    # the renders live in OUT/synthetic/dataset unless the config names a folder to share
    # (SyntheticDataConfig's own default is the LM-O segmentation set's folder)
    synthetic = raw.get("synthetic")
    if synthetic is None or isinstance(synthetic, dict) and "dir" not in synthetic:
        raw = {**raw, "synthetic": {**(synthetic or {}), "dir": ""}}
    return from_dict(ChainConfig, raw, "config")


# --------------------------------------------------------------------------------------------
# Stage settings, hashes, stamps
# --------------------------------------------------------------------------------------------
class Chain:
    """The resolved settings of every stage of one chain run and the paths between them."""

    def __init__(self, config: ChainConfig, out: str | None = None):
        self.config = config
        self.out = resolve_path(out or config.out)
        self.objects_file = self._objects_file()
        self.real_root = self._real_root()
        self.obj_ids = list(config.data.obj_ids) or self._registry().ids
        self.sections = {name: self._section(name) for name in config.stages}
        self.hashes: dict[str, str] = {}
        for name in config.stages:  # in order: a stage's dependencies are hashed before it
            self.hashes[name] = self._hash(name)

    def stage_dir(self, name: str) -> Path:
        return self.out / name

    def _objects_file(self) -> str:
        """The registry every stage reads: data.objects_file, or the one written from data.objects."""
        d = self.config.data
        if not d.objects:
            return d.objects_file or "config/objects.yaml"
        from ..objects.models_folder import MeshSpecError, write_models_folder

        folder = self.out / "objects"
        if distributed.is_main():
            try:
                write_models_folder(d.object_specs(), folder)
            except MeshSpecError as exc:
                raise ConfigError(f"data.objects: {exc}") from None
        distributed.barrier()
        return str(folder / "objects.yaml")

    def _registry(self):
        from ..objects.registry import ObjectRegistry

        return ObjectRegistry.from_yaml(resolve_path(self.objects_file))

    def export_dir(self) -> Path:
        return self.out / EXPORT_DIR

    def _real_root(self) -> Path:
        from ..data import bop_io

        return resolve_path(self.config.data.dataset) if self.config.data.dataset else bop_io.default_lmo_dir()

    def synthetic_config(self) -> SyntheticDataConfig:
        cfg = copy.deepcopy(self.config.synthetic)
        cfg.dir = str(resolve_path(cfg.dir) if cfg.dir else self.stage_dir("synthetic") / "dataset")
        if not cfg.models:  # the registry's meshes (a BOP models folder: obj_XXXXXX.ply + models_info.json)
            cfg.models = str(Path(self._registry()[self.obj_ids[0]].mesh_path).parent)
        # rendered by the synthetic stage when the chain has one, else by the first trainer that needs it
        cfg.generate = "synthetic" not in self.config.stages
        return cfg

    def pseudo_dir(self) -> Path:
        return self.stage_dir("segmentation") / "pseudo" / f"iter_{self.config.segmentation.iterations}"

    def _section(self, name: str):
        c, d = self.config, self.config.data
        if name == "synthetic":
            return self.synthetic_config()
        if name == "eval":
            return c.eval
        section = copy.deepcopy(getattr(c, name))
        section.objects_file = self.objects_file
        if name == "deepim":
            section.obj_ids = list(self.obj_ids)
            return section
        if name == "self6d":  # obj_id is set per object when it runs
            data = section.data
            data.models_dir = str(Path(self._registry()[self.obj_ids[0]].mesh_path).parent)  # BOP, millimetres
            data.cache_dir = str(self.stage_dir("self6d") / "crops")
            data.lmo_dataset, data.lmo_train_split = str(self.real_root), d.train_split
            data.lmo_eval_split = d.val_split
            data.lmo_pseudo_dir = str(self.pseudo_dir()) if "segmentation" in c.stages else ""
            return section
        # per-stage read filters stay; everything that makes the renders comes from synthetic:
        section.synthetic = dataclasses.replace(self.synthetic_config(),
                                                min_visib_fract=section.synthetic.min_visib_fract,
                                                min_px=section.synthetic.min_px)
        real = section.real
        real.dataset, real.scene_id, real.splits_file = str(self.real_root), d.scene_id, d.splits_file
        real.train_split = d.train_split
        if name == "segmentation":
            section.obj_ids = list(self.obj_ids)
            real.val_split, real.targets_file = d.val_split, d.targets_file
        else:  # dsc_posenet: obj_id is set per object when it runs
            real.pseudo_dir = str(self.pseudo_dir()) if "segmentation" in c.stages else ""
        return section

    def _hash(self, name: str) -> str:
        def strip(value):
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if k not in BOOKKEEPING_KEYS}
            return value

        own = {"stage": name, "section": strip(to_dict(self.sections[name])), "data": to_dict(self.config.data),
               "obj_ids": self.obj_ids, "seed": self.config.seed}
        if self.config.data.objects:  # a changed mesh file re-runs everything that renders it
            from ..objects.models_folder import specs_fingerprint

            own["meshes"] = specs_fingerprint(self.config.data.object_specs())
        depends = {dep: self.hashes[dep] for dep in self.depends(name) if dep in self.hashes}
        text = json.dumps({"own": own, "depends": depends}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def depends(self, name: str) -> tuple[str, ...]:
        """The stages whose outputs ``name`` reads; Self6D reads the pseudo masks only with unlabeled: lmo."""
        if name == "self6d" and self.config.self6d.unlabeled != "lmo":
            return ()
        return DEPENDS[name]

    def stamp(self, name: str, which: str = DONE_STAMP) -> dict | None:
        try:
            return json.loads((self.stage_dir(name) / which).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def up_to_date(self, name: str) -> bool:
        stamp = self.stamp(name)
        return stamp is not None and stamp.get("hash") == self.hashes[name]

    def write_stamp(self, name: str, which: str, extra: dict | None = None) -> None:
        from ..data.bop_io import atomic_write_text

        payload = {"stage": name, "hash": self.hashes[name],
                   "depends": {dep: self.hashes[dep] for dep in self.depends(name) if dep in self.hashes},
                   "time": time.strftime("%Y-%m-%d %H:%M:%S")} | (extra or {})
        atomic_write_text(self.stage_dir(name) / which, json.dumps(payload, indent=1) + "\n")

    def trainer_config(self, name: str, section, out_dir: Path) -> TrainConfig:
        c = self.config
        return TrainConfig(stage=name, out=str(out_dir), seed=c.seed, device=c.device, threads=c.threads,
                           **{name: section})


# --------------------------------------------------------------------------------------------
# The stages: each returns the list of output files that must exist for the stage to count as done
# --------------------------------------------------------------------------------------------
def _run_synthetic(chain: Chain, resume: bool, command: str) -> list[Path]:
    cfg = dataclasses.replace(chain.sections["synthetic"], generate=True)
    backgrounds = None
    if cfg.real_backgrounds:  # unlabeled real training frames (object boxes hidden) as backgrounds
        from ..data.boxes import DEFAULT_MAX_LOOSENING

        d = chain.config.data
        backgrounds = real_background_frames(str(chain.real_root), d.scene_id, d.splits_file, d.train_split,
                                             chain.obj_ids, DEFAULT_MAX_LOOSENING, 0)
    root = ensure_synthetic(cfg, chain.obj_ids, chain.real_root, backgrounds)
    return [root / cfg.split]


def _resume_checkpoint(path: Path, resume: bool) -> str | None:
    return str(path) if resume and path.is_file() else None


def _run_segmentation(chain: Chain, resume: bool, command: str) -> list[Path]:
    from .segmentation import run_segmentation

    out_dir = chain.stage_dir("segmentation")
    section = chain.sections["segmentation"]
    run_segmentation(chain.trainer_config("segmentation", section, out_dir), out=str(out_dir),
                     resume=_resume_checkpoint(out_dir / "checkpoints" / "seg_last.pt", resume), command=command)
    outputs = [out_dir / "checkpoints" / "seg_last.pt", out_dir / "results.json"]
    if section.iterations > 0:
        outputs.append(chain.pseudo_dir() / "test" / f"{chain.config.data.scene_id:06d}" / "pseudo_boxes.json")
    return outputs


def _run_dsc_posenet(chain: Chain, resume: bool, command: str) -> list[Path]:
    from .dsc_posenet import run_dsc_posenet

    stage_dir = chain.stage_dir("dsc_posenet")
    outputs = []
    for obj_id in chain.obj_ids:  # one network per object (dsc-posenet sec. 3.2)
        section = dataclasses.replace(chain.sections["dsc_posenet"], obj_id=obj_id)
        out_dir = stage_dir / f"obj_{obj_id:06d}"
        final = stage_dir / "checkpoints" / f"obj_{obj_id:06d}.pt"  # the pipeline's checkpoint layout
        if final.is_file() and (out_dir / "results.json").is_file():
            _say(f"[chain] dsc_posenet: object {obj_id} already trained in this run ({final})")
        else:
            run_dsc_posenet(chain.trainer_config("dsc_posenet", section, out_dir), out=str(out_dir),
                            resume=_resume_checkpoint(out_dir / "checkpoints" / "dsc_last.pt", resume),
                            command=command)
            if distributed.is_main():
                _atomic_copy(out_dir / "checkpoints" / "dsc_last.pt", final)
            distributed.barrier()
        exported = chain.export_dir() / "dsc_posenet" / f"obj_{obj_id:06d}.pt"
        if distributed.is_main():
            _export(final, exported)
        outputs += [final, out_dir / "results.json", exported]
    return outputs


def _run_deepim(chain: Chain, resume: bool, command: str) -> list[Path]:
    from .deepim import run_deepim

    out_dir = chain.stage_dir("deepim")
    run_deepim(chain.trainer_config("deepim", chain.sections["deepim"], out_dir), out=str(out_dir),
               resume=_resume_checkpoint(out_dir / "checkpoints" / "deepim_last.pt", resume), command=command)
    exported = chain.export_dir() / "deepim.pt"
    if distributed.is_main():
        _export(out_dir / "checkpoints" / "deepim_last.pt", exported)
    return [out_dir / "checkpoints" / "deepim_last.pt", out_dir / "results.json", exported]


def _run_self6d(chain: Chain, resume: bool, command: str) -> list[Path]:
    """One Self6D network per object (self6d sec. 3): stage synthetic on its rendered ROI crops, then
    stage self on the unlabeled images its section names (``unlabeled: target``: rendered RGB-D with
    depth, so the geometric term is on; ``lmo``: the real train split's RGB with the segmentation
    stage's pseudo masks, visual terms only, no depth)."""
    from .self6d import run_self6d

    if distributed.world_size() > 1:  # every rank would train and write the same files
        raise ConfigError("the self6d stage trains on one process (its trainer has no DDP): run it without "
                          "torchrun, e.g. python training/train.py --config ... --stages self6d,eval")
    stage_dir = chain.stage_dir("self6d")
    outputs = []
    for obj_id in chain.obj_ids:
        section = dataclasses.replace(chain.sections["self6d"], obj_id=obj_id)
        out_dir = stage_dir / f"obj_{obj_id:06d}"
        final = stage_dir / "checkpoints" / f"obj_{obj_id:06d}.pt"
        last_stage = section.stages[-1]
        if final.is_file() and (out_dir / "results.json").is_file():
            _say(f"[chain] self6d: object {obj_id} already trained in this run ({final})")
        else:
            run_self6d(chain.trainer_config("self6d", section, out_dir), out=str(out_dir),
                       resume=_resume_checkpoint(out_dir / "checkpoints" / "self6d_last.pt", resume), command=command)
            _atomic_copy(out_dir / "checkpoints" / f"self6d_{last_stage}.pt", final)
        exported = chain.export_dir() / "self6d" / f"obj_{obj_id:06d}.pt"
        if distributed.is_main():
            _export(final, exported)
        outputs += [final, out_dir / "results.json", exported]
    return outputs


def _run_eval(chain: Chain, resume: bool, command: str) -> list[Path]:
    """Rank 0 predicts the validation split with the chain's checkpoints, scores it (BOP19 + classic
    metrics) and writes OUT/report.md with the table and overlay pictures."""
    if not distributed.is_main():
        return []
    from ..data import bop_io
    from ..eval.bop import evaluate, load_eval_data
    from ..eval.cli import format_table
    from ..predict_cli import PredictJob, run as predict
    from ..viz.cli import OverlayJob, run as draw

    c, d, cfg = chain.config, chain.config.data, chain.config.eval
    out_dir = chain.stage_dir("eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = chain.out / "report.md"
    split = cfg.split or d.val_split
    scene = bop_io.scene_dir(chain.real_root, d.scene_id)
    splits_path = chain.real_root / d.splits_file
    splits = bop_io.load_splits(splits_path) if d.splits_file and splits_path.is_file() else {}
    lines = [f"# Training report: {chain.out.name}", "", f"Command: `{command}`", ""]
    if split not in splits or not (scene / "scene_gt.json").is_file():
        if not d.splits_file:
            reason = 'data.splits_file is "" (every image is a training image; no validation split)'
        elif split not in splits:
            reason = f"split {split!r} is not in {splits_path}"
        else:
            reason = f"{scene / 'scene_gt.json'} does not exist (no ground-truth poses)"
        _say(f"[chain] eval: no ground truth to evaluate against ({reason}); report without metrics")
        lines += [f"No evaluation: {reason}.", ""]
        bop_io.atomic_write_text(report_path, "\n".join(lines))
        return [report_path]
    results_csv = out_dir / "results.csv"
    job = PredictJob(dataset=str(chain.real_root), scene=d.scene_id, split=split, out=str(results_csv),
                     init=cfg.init, refine=cfg.refine_iterations, registry=str(resolve_path(chain.objects_file)),
                     obj_ids=list(chain.obj_ids), device=c.device, box_seed=cfg.box_seed, max_images=cfg.max_images,
                     # the compact copies: what ships is what is scored
                     checkpoints=str(chain.export_dir()) if cfg.init in ("dsc", "self6d") else None,
                     deepim=str(chain.export_dir() / "deepim.pt") if cfg.refine_iterations > 0 else None)
    _say(f"[chain] eval: dsc-pose-predict on split {split!r} of scene {d.scene_id}, init {cfg.init}, "
         f"{cfg.refine_iterations} DeepIM iterations")
    summary = predict(job)
    im_ids = bop_io.select_scene_images(chain.real_root, d.scene_id, "test", split, None, cfg.max_images).im_ids
    # score the chain's objects only (the dataset may annotate others), with the dataset's own
    # evaluation meshes when it has them (BOP: models_eval/), else the chain's models folder
    models_dir = None
    if not ((chain.real_root / "models_eval").is_dir() or (chain.real_root / "models").is_dir()):
        models_dir = Path(chain._registry()[chain.obj_ids[0]].mesh_path).parent
    data = load_eval_data(chain.real_root, models_dir=models_dir, im_ids=im_ids)
    data.targets = [t for t in data.targets if t.obj_id in chain.obj_ids]
    data.objects = {o: v for o, v in data.objects.items() if o in chain.obj_ids}
    metrics = evaluate(data, bop_io.read_bop_results(results_csv))
    metrics["results"] = str(results_csv)
    metrics["split"] = split
    bop_io.atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1, default=str))
    table = format_table(metrics)
    print(table, flush=True)
    pictures = []
    if cfg.overlays > 0:
        overlays = out_dir / "overlays"
        shutil.rmtree(overlays, ignore_errors=True)
        pictures = draw(OverlayJob(out=str(overlays), dataset=str(chain.real_root), scene=d.scene_id,
                                   split_name=split, results=str(results_csv), max_images=cfg.overlays))
    keys = ("AR_MSSD", "AR_MSPD", "ADD-S_0.1d", "5cm5deg", "proj2d_5px")
    lines += [f"Split `{split}` of scene {d.scene_id} in `{chain.real_root}`: {len(im_ids)} images, "
              f"{summary['estimates']} poses for {summary['detections']} detections (loosened ground-truth "
              f"boxes), initial pose `{cfg.init}`, {cfg.refine_iterations} DeepIM iterations.", "",
              "| object | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for obj_id, row in sorted(metrics["per_object"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {obj_id} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    lines.append("| all | " + " | ".join(f"{metrics[k]:.3f}" for k in keys) + " |")
    lines += ["", "```", table, "```", "",
              "Checkpoints: " + ", ".join(f"`{p.relative_to(chain.out)}`" for p in _checkpoints(chain)), ""]
    if pictures:
        lines += ["Ground truth (green) and estimates (magenta):", ""]
        lines += [f"![{p.stem}]({p.relative_to(chain.out)})" for p in pictures]
    bop_io.atomic_write_text(report_path, "\n".join(lines) + "\n")
    _say(f"[chain] eval: report {report_path}")
    return [report_path, results_csv, out_dir / "metrics.json"]


def _say(text: str) -> None:
    """Progress lines of the chain, once per run (rank 0), not once per DDP process."""
    if distributed.is_main():
        print(text, flush=True)


def _checkpoints(chain: Chain) -> list[Path]:
    export = chain.export_dir()
    found = sorted(export.glob("dsc_posenet/obj_*.pt")) + sorted(export.glob("self6d/obj_*.pt"))
    return found + ([export / "deepim.pt"] if (export / "deepim.pt").is_file() else [])


def _export(src: Path, dst: Path) -> None:
    """A compact (float16, weights-only, no optimiser) copy for the pipeline and the node (atomic)."""
    from ..checkpoint import compact, read_checkpoint, save_checkpoint

    save_checkpoint(dst, compact(read_checkpoint(src)))


def _atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


RUNNERS = {"synthetic": _run_synthetic, "segmentation": _run_segmentation, "dsc_posenet": _run_dsc_posenet,
           "deepim": _run_deepim, "self6d": _run_self6d, "eval": _run_eval}
ALWAYS_CONTINUES = frozenset({"synthetic"})  # deterministic per image: continuing equals starting over


# --------------------------------------------------------------------------------------------
# Running the chain
# --------------------------------------------------------------------------------------------
def run_chain(config: ChainConfig, out: str | None = None, only: list[str] | None = None, resume: bool = False,
              command: str = "") -> dict[str, str]:
    """Run (or skip) the stages in order; returns {stage: "skipped" | "ran" | "resumed" | "not selected"}."""
    chain = Chain(config, out)
    selected = list(only) if only else list(config.stages)
    unknown = [s for s in selected if s not in config.stages]
    if unknown:
        raise ConfigError(f"--stages {unknown} are not stages of this chain {config.stages}")
    status: dict[str, str] = {}
    ready: dict[str, bool] = {}
    for name in config.stages:
        # rank 0 decides from the files, every rank follows the same decision
        current = distributed.broadcast_object(chain.up_to_date(name))
        if name not in selected:
            status[name], ready[name] = "not selected", current
            continue
        stale = [dep for dep in chain.depends(name) if dep in ready and not ready[dep]]
        if stale:
            raise ConfigError(f"stage {name} reads the outputs of {stale}, which are not up to date; "
                              f"run them too (add them to --stages)")
        if current:
            _say(f"[chain] {name}: up to date (stamp {chain.stage_dir(name) / DONE_STAMP}), skipped")
            status[name], ready[name] = "skipped", True
            continue
        started = chain.stamp(name, STARTED_STAMP)
        continues = started is not None and started.get("hash") == chain.hashes[name] and (
            resume or name in ALWAYS_CONTINUES)
        continues = distributed.broadcast_object(continues)
        stage_dir = chain.stage_dir(name)
        if distributed.is_main():
            if continues:
                (stage_dir / DONE_STAMP).unlink(missing_ok=True)
            else:
                shutil.rmtree(stage_dir, ignore_errors=True)  # changed settings: nothing old may leak in
                exported = chain.export_dir() / EXPORTS[name] if name in EXPORTS else None
                if exported is not None and exported.is_dir():
                    shutil.rmtree(exported)
                elif exported is not None:
                    exported.unlink(missing_ok=True)
            stage_dir.mkdir(parents=True, exist_ok=True)
            chain.write_stamp(name, STARTED_STAMP)
            text = yaml.safe_dump(to_dict(chain.sections[name]), sort_keys=False)
            (stage_dir / "config.resolved.yaml").write_text(f"# stage {name} of {command}\n{text}")
        distributed.barrier()
        verb = "continuing" if continues else "running"
        _say(f"[chain] {name}: {verb} (outputs in {stage_dir})")
        t0 = time.time()
        outputs = RUNNERS[name](chain, continues, command)
        distributed.barrier()
        if distributed.is_main():
            missing = [str(p) for p in outputs if not p.exists()]
            if missing:
                raise RuntimeError(f"stage {name} finished without its outputs {missing}")
            chain.write_stamp(name, DONE_STAMP, {"seconds": round(time.time() - t0, 1),
                                                  "outputs": [str(p) for p in outputs]})
        distributed.barrier()
        _say(f"[chain] {name}: done in {time.time() - t0:.0f} s")
        status[name], ready[name] = ("resumed" if continues else "ran"), True
    return status
