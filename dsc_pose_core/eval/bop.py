"""BOP19 evaluation protocol (6D localisation), plus the classic LM/LM-O metrics.

What this reproduces (BOP toolkit: ``eval_bop19_pose.py`` -> ``eval_calc_errors.py`` ->
``eval_calc_scores.py`` -> ``pose_matching.py`` / ``score.py``):

1. Targets ``(scene, im, obj, inst_count)`` come from ``test_targets_bop19.json``. For each
   target, the estimates of that object in that image are sorted by decreasing score (ties keep
   file order) and only the top ``inst_count`` are evaluated (BOP19 ``n_top = -1``). Estimates
   for images/objects that are not targets are ignored.
2. Each kept estimate gets an error w.r.t. *every* GT instance of the same object in the image.
   MSSD / ADD / ADD-S are +inf when the two model centres are a diameter or more apart (BOP's
   bounding-sphere shortcut).
3. Errors are normalised: MSSD, ADD(-S) by the object diameter; MSPD by ``640 / image width``.
4. Valid GT instances (BOP19 ``visib_gt_min = -1``): in every target image, for each target
   object the ``inst_count`` most visible GT instances of that object (by ``visib_fract``) are
   valid; all other GT instances are invalid. Invalid GT can never be matched and is not
   counted. (With ``visib_gt_min >= 0``, the older rule is used instead: valid = the object is a
   target and ``visib_fract >= visib_gt_min``.) For LM-O this means the 13 targets whose GT is
   less than 10 % visible still count, as they do in the official scores.
5. Matching, per image and object, per threshold: estimates in decreasing score order each take
   the not-yet-matched valid GT with the smallest error, if that error is strictly below the
   threshold (all elements, for multi-element errors like 5 cm 5 deg).
6. Recall at a threshold = matched valid GT / all valid GT (pooled over all objects);
   AR_MSSD = mean recall over thresholds 0.05, 0.10, ..., 0.50 (x diameter);
   AR_MSPD = mean recall over thresholds 5, 10, ..., 50 px (x image width / 640).
   The thresholds are generated as the toolkit does (``np.arange(0.05, 0.51, 0.05)``).

Classic metrics use the same targets, top-k rule, valid GT and greedy matching, with one
threshold each: ADD(-S) < 0.1 diameter (ADD-S for objects with symmetries in models_info),
rotation < 5 deg and translation < 5 cm, Proj2D < 5 px. They are reported per object and as the
mean over objects (the usual LM-O table), and pooled over instances in ``pooled``.

VSD is not computed (needs depth images and a depth renderer): AR_VSD is ``None``.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import bop_io
from ..objects.mesh import load_mesh
from ..objects.models_info import ModelInfo, load_models_info
from ..objects.symmetry import BOP_MAX_SYM_DISC_STEP, symmetry_transformations_array
from . import metrics

MSSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)  # x object diameter
MSPD_THRESHOLDS = np.arange(5, 51, 5)  # px at image width 640
BOP19_VISIB_GT_MIN = -1.0  # "k most visible GT, k = inst_count" (the toolkit's BOP19 setting)
TARGETS_VISIB_MIN = 0.1  # BOP's rule when targets are made from GT: >= 10 % visible
ADD_THRESHOLD = 0.1  # x object diameter
RE_THRESHOLD_DEG = 5.0
TE_THRESHOLD_M = 0.05
PROJ_THRESHOLD_PX = 5.0


@dataclass
class EvalObject:
    obj_id: int
    points: np.ndarray  # [N,3] metres, the evaluation mesh's vertices
    diameter: float  # metres (models_info)
    symmetric: bool
    sym_R: np.ndarray  # [S,3,3]
    sym_t: np.ndarray  # [S,3] metres


@dataclass
class EvalScene:
    scene_id: int
    gt: dict[int, list[bop_io.GtPose]]
    gt_info: dict[int, list[bop_io.GtInfo]]
    camera: dict[int, bop_io.CameraInfo]


@dataclass
class EvalData:
    dataset_dir: str
    models_dir: str
    targets: list[bop_io.Target]
    targets_source: str
    scenes: dict[int, EvalScene]
    objects: dict[int, EvalObject]
    im_width: int
    has_depth: bool = False
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _image_width(dataset_dir: Path) -> int | None:
    cam_path = dataset_dir / "camera.json"
    if cam_path.is_file():
        with open(cam_path) as f:
            cam = json.load(f)
        if "width" in cam:
            return int(cam["width"])
    return None


def targets_from_gt(
    scene_gt_info: dict[int, list[bop_io.GtInfo]],
    scene_gt: dict[int, list[bop_io.GtPose]],
    scene_id: int,
    visib_min: float = TARGETS_VISIB_MIN,
) -> list[bop_io.Target]:
    """Targets as BOP makes them: per image and object, the instances >= visib_min visible."""
    out = []
    for im_id in sorted(scene_gt):
        counts: dict[int, int] = defaultdict(int)
        infos = scene_gt_info.get(im_id, [])
        for gt_id, gt in enumerate(scene_gt[im_id]):
            if gt_id < len(infos) and infos[gt_id].visib_fract >= visib_min:
                counts[gt.obj_id] += 1
        for obj_id in sorted(counts):
            out.append(bop_io.Target(scene_id, im_id, obj_id, counts[obj_id]))
    return out


def load_eval_data(
    dataset_dir: str | os.PathLike,
    models_dir: str | os.PathLike | None = None,
    targets_path: str | os.PathLike | None = None,
    im_ids: list[int] | None = None,
    split_dir: str = "test",
    max_sym_disc_step: float = BOP_MAX_SYM_DISC_STEP,
) -> EvalData:
    """Load GT, cameras, targets and evaluation meshes of a BOP dataset split.

    ``models_dir`` defaults to ``models_eval/`` (what BOP scores with) or ``models/``;
    ``targets_path`` to ``test_targets_bop19.json`` or, when absent, targets built from the GT
    (instances at least 10 % visible); ``im_ids`` restricts the targets to those images.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {dataset_dir}")
    notes: list[str] = []

    if models_dir is None:
        models_dir = dataset_dir / "models_eval"
        if not models_dir.is_dir():
            models_dir = dataset_dir / "models"
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(f"models directory not found: {models_dir}")
    info_path = models_dir / "models_info.json"
    if not info_path.is_file():
        info_path = dataset_dir / "models" / "models_info.json"
    models_info = load_models_info(info_path)

    # targets
    split_path = dataset_dir / split_dir
    if targets_path is None and (dataset_dir / "test_targets_bop19.json").is_file():
        targets_path = dataset_dir / "test_targets_bop19.json"
    scenes: dict[int, EvalScene] = {}

    def scene(scene_id: int) -> EvalScene:
        if scene_id not in scenes:
            d = bop_io.scene_dir(dataset_dir, scene_id, split_dir)
            if not d.is_dir():
                raise FileNotFoundError(f"scene directory not found: {d}")
            scenes[scene_id] = EvalScene(
                scene_id=scene_id,
                gt=bop_io.load_scene_gt(d / "scene_gt.json"),
                gt_info=bop_io.load_scene_gt_info(d / "scene_gt_info.json"),
                camera=bop_io.load_scene_camera(d / "scene_camera.json"),
            )
        return scenes[scene_id]

    if targets_path is not None:
        targets = bop_io.load_targets(targets_path)
        targets_source = str(targets_path)
    else:
        if not split_path.is_dir():
            raise FileNotFoundError(f"split directory not found: {split_path}")
        targets = []
        for d in sorted(split_path.iterdir()):
            if d.is_dir() and d.name.isdigit():
                s = scene(int(d.name))
                targets += targets_from_gt(s.gt_info, s.gt, s.scene_id)
        targets_source = f"all GT instances >= {TARGETS_VISIB_MIN:g} visible in {split_path}"
    if im_ids is not None:
        keep = set(int(i) for i in im_ids)
        targets = [t for t in targets if t.im_id in keep]
    if not targets:
        raise ValueError("no evaluation targets (check --targets / --split)")

    for t in targets:
        s = scene(t.scene_id)
        for table, name in ((s.gt, "scene_gt"), (s.gt_info, "scene_gt_info"), (s.camera, "scene_camera")):
            if t.im_id not in table:
                raise bop_io.BopFormatError(
                    f"target image {t.im_id} of scene {t.scene_id} is missing from {name}.json"
                )
        if len(s.gt_info[t.im_id]) != len(s.gt[t.im_id]):
            raise bop_io.BopFormatError(
                f"scene {t.scene_id} image {t.im_id}: scene_gt and scene_gt_info differ in length"
            )

    # meshes of every object that is a target or appears in the GT of a target image
    obj_ids = {t.obj_id for t in targets}
    objects: dict[int, EvalObject] = {}
    for obj_id in sorted(obj_ids):
        if obj_id not in models_info:
            raise bop_io.BopFormatError(f"object {obj_id} is not in {info_path}")
        info: ModelInfo = models_info[obj_id]
        mesh = load_mesh(models_dir / f"obj_{obj_id:06d}.ply")
        sym_R, sym_t = symmetry_transformations_array(info, max_sym_disc_step)
        objects[obj_id] = EvalObject(
            obj_id=obj_id,
            points=mesh.vertices,
            diameter=info.diameter,
            symmetric=info.is_symmetric,
            sym_R=sym_R,
            sym_t=sym_t,
        )

    im_width = _image_width(dataset_dir)
    if im_width is None:
        im_width = 640
        notes.append("image width unknown (no camera.json width); MSPD assumes 640 px")
    has_depth = any(
        (bop_io.scene_dir(dataset_dir, sid, split_dir) / "depth").is_dir() for sid in scenes
    )
    return EvalData(
        dataset_dir=str(dataset_dir),
        models_dir=str(models_dir),
        targets=targets,
        targets_source=targets_source,
        scenes=scenes,
        objects=objects,
        im_width=im_width,
        has_depth=has_depth,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------
def greedy_match(errors: np.ndarray, thresholds, gt_valid: np.ndarray) -> np.ndarray:
    """BOP's greedy matching for one image and object.

    ``errors``: [n_est, n_gt, n_elem] with the estimates already in decreasing score order;
    ``thresholds``: [n_elem]; ``gt_valid``: [n_gt] bool. Returns, per estimate, the matched GT
    index or -1. An estimate takes the unmatched valid GT whose error is below the running best
    (initially the thresholds) in every element.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    n_est, n_gt = errors.shape[:2]
    taken = np.zeros(n_gt, dtype=bool)
    out = np.full(n_est, -1, dtype=np.int64)
    for e in range(n_est):
        best = thresholds
        best_gt = -1
        for g in range(n_gt):
            if gt_valid[g] and not taken[g] and np.all(errors[e, g] < best):
                best = errors[e, g]
                best_gt = g
        if best_gt >= 0:
            taken[best_gt] = True
            out[e] = best_gt
    return out


@dataclass
class _Group:
    """One target (scene, image, object): its kept estimates and its GT instances."""

    scene_id: int
    im_id: int
    obj_id: int
    est_idx: np.ndarray  # indices into the estimate list, decreasing score
    gt_ids: np.ndarray  # GT indices in scene_gt[im_id] of this object
    gt_valid: np.ndarray  # [n_gt] bool
    pair_offset: int = 0  # where this group's (est x gt) pairs start in the flat pair arrays


def _valid_gt_mask(
    im_gt: list[bop_io.GtPose],
    im_gt_info: list[bop_io.GtInfo],
    im_targets: dict[int, int],
    visib_gt_min: float,
) -> np.ndarray:
    valid = np.zeros(len(im_gt), dtype=bool)
    if visib_gt_min >= 0:
        for g, gt in enumerate(im_gt):
            valid[g] = gt.obj_id in im_targets and im_gt_info[g].visib_fract >= visib_gt_min
        return valid
    order = sorted(range(len(im_gt)), key=lambda g: im_gt_info[g].visib_fract, reverse=True)
    to_add = dict(im_targets)
    for g in order:
        o = im_gt[g].obj_id
        if to_add.get(o, 0) > 0:
            valid[g] = True
            to_add[o] -= 1
    return valid


def _recall_table(groups, pair_err, thresholds_list, obj_ids, per_object_valid):
    """Match at every threshold; returns (pooled recalls [T], per-object recalls {obj: [T]})."""
    n_t = len(thresholds_list)
    tps = np.zeros(n_t)
    obj_tps = {o: np.zeros(n_t) for o in obj_ids}
    for g in groups:
        n_e, n_g = len(g.est_idx), len(g.gt_ids)
        if n_e == 0 or n_g == 0 or not g.gt_valid.any():
            continue
        err = pair_err[g.pair_offset : g.pair_offset + n_e * n_g].reshape(n_e, n_g, -1)
        if n_e == 1 and n_g == 1:  # the common case, no greedy search needed
            ok = np.array([bool(np.all(err[0, 0] < np.asarray(th))) for th in thresholds_list])
            tps += ok
            obj_tps[g.obj_id] += ok
            continue
        for ti, th in enumerate(thresholds_list):
            matched = greedy_match(err, th, g.gt_valid)
            n = int((matched >= 0).sum())  # only valid GT can be matched
            tps[ti] += n
            obj_tps[g.obj_id][ti] += n
    total = sum(per_object_valid.values())
    pooled = tps / total if total else np.zeros(n_t)
    per_obj = {
        o: (obj_tps[o] / per_object_valid[o]) if per_object_valid[o] else np.zeros(n_t)
        for o in obj_ids
    }
    return pooled, per_obj


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def evaluate(
    data: EvalData,
    estimates: list[bop_io.PoseEstimate],
    visib_gt_min: float = BOP19_VISIB_GT_MIN,
) -> dict:
    """Score estimates (metres) against ``data``; returns a JSON-ready dict (see module doc)."""
    t_start = time.perf_counter()

    # targets by (scene, im) -> {obj: inst_count}
    targets_org: dict[tuple[int, int], dict[int, int]] = {}
    for t in data.targets:
        targets_org.setdefault((t.scene_id, t.im_id), {})[t.obj_id] = t.inst_count

    ests_org: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for i, e in enumerate(estimates):
        ests_org[(e.scene_id, e.im_id, e.obj_id)].append(i)
    scores = np.array([e.score for e in estimates], dtype=np.float64)

    groups: list[_Group] = []
    per_object_valid: dict[int, int] = {o: 0 for o in data.objects}
    for (scene_id, im_id), im_targets in targets_org.items():
        s = data.scenes[scene_id]
        im_gt, im_info = s.gt[im_id], s.gt_info[im_id]
        valid = _valid_gt_mask(im_gt, im_info, im_targets, visib_gt_min)
        for g, gt in enumerate(im_gt):
            if valid[g]:
                per_object_valid[gt.obj_id] += 1
        for obj_id, inst_count in im_targets.items():
            idx = np.array(ests_org.get((scene_id, im_id, obj_id), []), dtype=np.int64)
            if len(idx):
                order = np.argsort(-scores[idx], kind="stable")
                idx = idx[order][: max(0, inst_count)]
            gt_ids = np.array([g for g, gt in enumerate(im_gt) if gt.obj_id == obj_id], dtype=np.int64)
            groups.append(_Group(scene_id, im_id, obj_id, idx, gt_ids, valid[gt_ids]))

    # flat (estimate, GT) pair arrays
    pair_est, pair_gt_R, pair_gt_t, pair_K, pair_obj = [], [], [], [], []
    offset = 0
    for g in groups:
        g.pair_offset = offset
        s = data.scenes[g.scene_id]
        K = s.camera[g.im_id].K
        for e in g.est_idx:
            for gid in g.gt_ids:
                gt = s.gt[g.im_id][gid]
                pair_est.append(e)
                pair_gt_R.append(gt.R)
                pair_gt_t.append(gt.t)
                pair_K.append(K)
                pair_obj.append(g.obj_id)
        offset += len(g.est_idx) * len(g.gt_ids)
    n_pairs = offset

    errs = {
        k: np.full(n_pairs, np.inf)
        for k in ("mssd", "mspd", "add", "adds", "proj", "re", "te")
    }
    if n_pairs:
        pair_est_a = np.asarray(pair_est, dtype=np.int64)
        R_e = np.stack([estimates[i].R for i in pair_est_a])
        t_e = np.stack([estimates[i].t for i in pair_est_a])
        R_g, t_g = np.stack(pair_gt_R), np.stack(pair_gt_t)
        K_all = np.stack(pair_K)
        pair_obj_a = np.asarray(pair_obj)
        for obj_id, obj in data.objects.items():
            sel = np.nonzero(pair_obj_a == obj_id)[0]
            if not len(sel):
                continue
            args = (R_e[sel], t_e[sel], R_g[sel], t_g[sel])
            near = np.linalg.norm(t_e[sel] - t_g[sel], axis=1) < obj.diameter  # BOP shortcut
            syms = (obj.sym_R, obj.sym_t)
            mssd = np.full(len(sel), np.inf)
            add = np.full(len(sel), np.inf)
            adds = np.full(len(sel), np.inf)
            if near.any():
                near_args = tuple(a[near] for a in args)
                mssd[near] = metrics.mssd_batch(*near_args, obj.points, syms)
                add[near] = metrics.add_batch(*near_args, obj.points)
                if obj.symmetric:
                    adds[near] = metrics.add_s_batch(*near_args, obj.points)
            errs["mssd"][sel] = mssd / obj.diameter
            errs["add"][sel] = add / obj.diameter
            errs["adds"][sel] = (adds if obj.symmetric else add) / obj.diameter
            errs["mspd"][sel] = metrics.mspd_batch(*args, K_all[sel], obj.points, syms) * (
                640.0 / data.im_width
            )
            errs["proj"][sel] = metrics.proj2d_batch(*args, K_all[sel], obj.points)
            errs["re"][sel] = metrics.rotation_error_deg_batch(R_e[sel], R_g[sel])
            errs["te"][sel] = metrics.translation_error_batch(t_e[sel], t_g[sel])
    t_errors = time.perf_counter() - t_start

    obj_ids = sorted(data.objects)
    mssd_ths = [[float(th)] for th in MSSD_THRESHOLDS]
    mspd_ths = [[float(th)] for th in MSPD_THRESHOLDS]
    rec_mssd, obj_mssd = _recall_table(groups, errs["mssd"], mssd_ths, obj_ids, per_object_valid)
    rec_mspd, obj_mspd = _recall_table(groups, errs["mspd"], mspd_ths, obj_ids, per_object_valid)
    rec_adds, obj_adds = _recall_table(groups, errs["adds"], [[ADD_THRESHOLD]], obj_ids, per_object_valid)
    rete = np.stack([errs["re"], errs["te"]], axis=1)
    rec_rete, obj_rete = _recall_table(
        groups, rete, [[RE_THRESHOLD_DEG, TE_THRESHOLD_M]], obj_ids, per_object_valid
    )
    rec_proj, obj_proj = _recall_table(groups, errs["proj"], [[PROJ_THRESHOLD_PX]], obj_ids, per_object_valid)

    objs_with_targets = [o for o in obj_ids if per_object_valid[o] > 0]

    def obj_mean(table):
        if not objs_with_targets:
            return 0.0
        return float(np.mean([table[o][0] for o in objs_with_targets]))

    per_object = {
        str(o): {
            "AR_MSSD": float(np.mean(obj_mssd[o])),
            "AR_MSPD": float(np.mean(obj_mspd[o])),
            "AR_VSD": None,
            "ADD-S_0.1d": float(obj_adds[o][0]),
            "5cm5deg": float(obj_rete[o][0]),
            "proj2d_5px": float(obj_proj[o][0]),
            "symmetric": bool(data.objects[o].symmetric),
            "metric_add": "ADD-S" if data.objects[o].symmetric else "ADD",
            "n_gt": int(per_object_valid[o]),
        }
        for o in obj_ids
    }

    n_evaluated = int(sum(len(g.est_idx) for g in groups))
    times = {}
    for e in estimates:
        times.setdefault((e.scene_id, e.im_id), e.time)
    time_vals = [v for v in times.values()]
    notes = list(data.notes)
    notes.append(
        "AR_VSD is null: VSD needs depth images and a depth renderer"
        + ("" if not data.has_depth else " (depth found, but VSD is not implemented)")
    )
    return {
        "AR_MSSD": float(np.mean(rec_mssd)),
        "AR_MSPD": float(np.mean(rec_mspd)),
        "AR_VSD": None,
        "ADD-S_0.1d": obj_mean(obj_adds),
        "5cm5deg": obj_mean(obj_rete),
        "proj2d_5px": obj_mean(obj_proj),
        "per_object": per_object,
        "recalls_mssd": [float(r) for r in rec_mssd],
        "recalls_mspd": [float(r) for r in rec_mspd],
        "thresholds_mssd": [float(th) for th in MSSD_THRESHOLDS],
        "thresholds_mspd_px": [float(th) * data.im_width / 640.0 for th in MSPD_THRESHOLDS],
        "pooled": {
            "ADD-S_0.1d": float(rec_adds[0]),
            "5cm5deg": float(rec_rete[0]),
            "proj2d_5px": float(rec_proj[0]),
        },
        "counts": {
            "estimates_read": len(estimates),
            "estimates_evaluated": n_evaluated,
            "targets": len(data.targets),
            "valid_gt": int(sum(per_object_valid.values())),
            "images": len(targets_org),
        },
        "visib_gt_min": visib_gt_min,
        "mean_time_per_image_s": (
            float(np.mean(time_vals)) if time_vals and min(time_vals) >= 0 else None
        ),
        "image_width": data.im_width,
        "dataset": data.dataset_dir,
        "models_dir": data.models_dir,
        "targets_source": data.targets_source,
        "eval_seconds": {"errors": t_errors, "total": time.perf_counter() - t_start},
        "notes": notes,
    }


def evaluate_files(
    dataset_dir,
    results_csv,
    targets_path=None,
    models_dir=None,
    im_ids=None,
    visib_gt_min: float = BOP19_VISIB_GT_MIN,
) -> dict:
    """Load everything and evaluate a BOP results CSV; see :func:`evaluate`."""
    data = load_eval_data(dataset_dir, models_dir=models_dir, targets_path=targets_path, im_ids=im_ids)
    estimates = bop_io.read_bop_results(results_csv)
    report = evaluate(data, estimates, visib_gt_min=visib_gt_min)
    report["results"] = os.fspath(results_csv)
    return report
