"""``dsc-pose-predict``: run the pose pipeline over the images of a BOP scene, write a BOP results CSV.

Example::

    dsc-pose-predict --dataset ../shared/data/lmo --scene 2 --split val --out results.csv \\
        --init dsc --checkpoints checkpoints --deepim checkpoints/deepim.pt --refine 2
    dsc-pose-predict --dataset DIR --scene 0 --out results.csv --init box --refine 0
    dsc-pose-predict --dataset ../shared/data/lmo --scene 2 --split val --out results.csv --init dsc \
        --refine 0 --align before        # DSC-PoseNet + test-time alignment (no DeepIM)

Detections are the ground-truth visible boxes (``bbox_visib`` of scene_gt_info.json, object ids
from scene_gt.json) loosened by U(0, 15 %) per side with ``data.boxes.loosen_box_xywh`` and one
generator per image seeded with (box_seed, scene_id, im_id), drawn for every instance in file order
(the rule of the segmentation and DSC-PoseNet stages: the same boxes for the same seed); instances
less than 10 % visible or with an empty box are not detected. Only the boxes and object ids are
read from the ground truth, never the poses. Nothing is cached: any BOP folder works.

The CSV has one row per estimated pose (``scene_id,im_id,obj_id,score,R,t,time``, millimetres);
``time`` is the wall time of the pipeline on the image (seconds, same for all rows of the image).
Checkpoints default to the repository's ``checkpoints/`` folder when it exists
(``checkpoints/dsc_posenet/obj_XXXXXX.pt`` or ``NAME.pt``, ``checkpoints/deepim.pt``,
``checkpoints/segmentation/lmo_seg.pt`` for ``--align``).
Errors (missing files, bad checkpoints) give one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from . import defaults
from .align import AlignConfig
from .templates import TemplateConfig
from .pipeline import refiner_order

PROG = "dsc-pose-predict"
MIN_VISIB_FRACT = 0.1


@dataclass
class PredictJob:
    """What one ``dsc-pose-predict`` run does (the flags of the same names); the stage chain builds one
    directly. ``split`` / ``ids`` choose the images (neither: all of the scene)."""

    dataset: str
    scene: int
    out: str  # results CSV (BOP19 format)
    split_dir: str = "test"
    split: str | None = None  # image ids from DATASET/splits.json under this name
    ids: str | None = None  # file with image ids
    max_images: int = 0  # 0: all
    init: str = defaults.INIT
    refine: int = defaults.REFINE_ITERATIONS  # DeepIM iterations (0: no refinement)
    align: str = defaults.ALIGN  # test-time alignment: "off", "before" DeepIM or "after" it
    align_hypotheses: str = defaults.ALIGN_HYPOTHESES  # the aligner's rotation hypotheses (defaults.HYPOTHESES)
    align_colour: float = defaults.ALIGN_COLOUR  # weight of the aligner's vertex-colour term
    segmentation: str | None = None  # the aligner's mask network; default <checkpoints>/segmentation/lmo_seg.pt
    template_cache: str = defaults.TEMPLATE_CACHE  # init "templates": where its banks are kept ("": nowhere)
    checkpoints: str | None = None  # the initialiser's checkpoints per object (default <repo>/checkpoints)
    deepim: str | None = None  # default <checkpoints>/deepim.pt when it exists
    registry: str | None = None  # default <repo>/config/objects.yaml
    models_dir: str | None = None
    obj_ids: list[int] | None = None
    box_seed: int = 0
    max_loosening: float = 0.15
    device: str = "cpu"
    threads: int = 0
    box_templates: int = 0
    dsc_scales: str = "both"
    track: bool = False  # images in id order as one video: confident poses start the next frame (``tracking``)
    track_min_score: float = defaults.TRACKING_MIN_SCORE  # tracking: poses at least this confident continue their track
    quiet: bool = False


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="BOP dataset folder (test/<scene>/rgb, scene_camera.json, ...)")
    p.add_argument("--scene", type=int, required=True, help="scene id")
    p.add_argument("--split-dir", default="test", help="split folder inside the dataset (default: test)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--split", help="image ids from DATASET/splits.json under this name (e.g. val)")
    which.add_argument("--ids", help="file with image ids (JSON list, or integers separated by spaces/commas/lines)")
    p.add_argument("--max-images", type=int, default=0, help="at most this many images (0: all)")
    p.add_argument("--out", required=True, help="results CSV (BOP19 format)")
    p.add_argument("--init", default=defaults.INIT, choices=defaults.INITIALISERS,
                   help=f"initial pose (default: {defaults.INIT})")
    p.add_argument("--refine", type=int, default=defaults.REFINE_ITERATIONS,
                   help=f"DeepIM iterations (0: no refinement; default {defaults.REFINE_ITERATIONS})")
    p.add_argument("--align", default=defaults.ALIGN, choices=defaults.ALIGN_ORDERS,
                   help=f"training-free render-and-compare alignment: off, before or after DeepIM "
                   f"(with --refine 0 either runs it alone; default {defaults.ALIGN})")
    p.add_argument("--align-colour", type=float, default=defaults.ALIGN_COLOUR,
                   help="weight of the aligner's appearance term (the model's vertex colours against the crop); "
                        "helps from rotations near the truth (--init templates), not from far ones")
    p.add_argument("--align-hypotheses", default=defaults.ALIGN_HYPOTHESES, choices=defaults.HYPOTHESES,
                   help="rotations the aligner tries besides the initial one: none, flips (180 deg about the "
                   "camera axes), cube24 (the cube's 24 rotations: for the box initialiser) or templates (the pose "
                   f"of rendered templates matched in pretrained features); default {defaults.ALIGN_HYPOTHESES}")
    p.add_argument("--template-cache", default=defaults.TEMPLATE_CACHE,
                   help="folder where --init templates keeps its rendered template banks between runs "
                        f"('' = build them every run; default {defaults.TEMPLATE_CACHE})")
    p.add_argument("--segmentation", help="the aligner's and the templates initialiser's segmentation checkpoint "
                   "(default: <checkpoints>/segmentation/lmo_seg.pt)")
    p.add_argument("--checkpoints", help="folder with the initialiser's checkpoints per object "
                   "(dsc_posenet/obj_XXXXXX.pt or self6d/obj_XXXXXX.pt) "
                   "(default: <repo>/checkpoints when it exists)")
    p.add_argument("--deepim", help="DeepIM checkpoint (default: <checkpoints>/deepim.pt when it exists)")
    p.add_argument("--registry", help="object registry YAML (default: <repo>/config/objects.yaml)")
    p.add_argument("--models-dir", help="override the registry's models_dir")
    p.add_argument("--obj-ids", type=_int_list, help="only these objects, e.g. 1,5,6 (default: the registry's)")
    p.add_argument("--box-seed", type=int, default=0, help="seed of the box loosening (default 0)")
    p.add_argument("--max-loosening", type=float, default=0.15, help="per-side loosening bound (default 0.15)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--box-templates", type=int, default=0, help="box initialiser: viewpoints to score (0: canonical)")
    p.add_argument("--dsc-scales", default="both", choices=("both", "unnorm", "norm"),
                   help="DSC-PoseNet keypoints given to PnP: both scales averaged (default) or one alone")
    p.add_argument("--track", action="store_true",
                   help="the images (in id order) are one video: a confident pose of the previous image starts the "
                   "refiners instead of the initialiser (needs --align or --refine > 0)")
    p.add_argument("--track-min-score", type=float, default=defaults.TRACKING_MIN_SCORE,
                   help=f"--track: poses at least this confident continue their track "
                   f"(default {defaults.TRACKING_MIN_SCORE})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def read_id_file(path: str) -> list[int]:
    text = Path(path).read_text()
    try:
        raw = json.loads(text)
        if isinstance(raw, list):
            return [int(v) for v in raw]
    except (json.JSONDecodeError, TypeError, ValueError):
        pass
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{path}: expected image ids (JSON list or integers)") from None


def gt_instances(scene_gt, scene_gt_info, scene_id: int, im_id: int, width: int, height: int, box_seed: int,
                 obj_ids=None, max_loosening: float = 0.15) -> list[tuple[int, int, np.ndarray]]:
    """The detected instances of one image: [(index in scene_gt, obj_id, loosened visible GT box
    (x, y, w, h) integer pixels)] (see the module docstring). One generator per image, a draw for
    every instance (kept or not): the same boxes whatever is filtered."""
    from .data.boxes import loosen_box_xywh

    rng = np.random.default_rng([box_seed, scene_id, im_id])
    out = []
    for inst, (pose, info) in enumerate(zip(scene_gt.get(im_id, []), scene_gt_info.get(im_id, []))):
        loose = loosen_box_xywh(info.bbox_visib, rng, width, height, max_loosening)
        if info.visib_fract < MIN_VISIB_FRACT or info.bbox_visib[2] <= 0 or info.bbox_visib[3] <= 0:
            continue
        if loose[2] <= 0 or loose[3] <= 0:
            continue
        if obj_ids is not None and pose.obj_id not in obj_ids:
            continue
        out.append((inst, int(pose.obj_id), loose))
    return out


def gt_detections(scene_gt, scene_gt_info, scene_id: int, im_id: int, width: int, height: int, box_seed: int,
                  obj_ids=None, max_loosening: float = 0.15):
    """The detections of one image (:func:`gt_instances` as pipeline detections, score 1)."""
    from .pipeline import Detection

    return [Detection(obj_id, box, 1.0) for _, obj_id, box in
            gt_instances(scene_gt, scene_gt_info, scene_id, im_id, width, height, box_seed, obj_ids, max_loosening)]


def job_from_args(args: argparse.Namespace) -> PredictJob:
    return PredictJob(**{f.name: getattr(args, f.name) for f in fields(PredictJob)})


def run(args: PredictJob) -> dict:
    import torch
    from tqdm import tqdm

    from .data import bop_io
    from .data.bop_io import find_rgb, read_rgb
    from .pipeline import PipelineConfig, load_pose_estimator

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dataset = Path(args.dataset)
    scene = bop_io.select_scene_images(dataset, args.scene, args.split_dir, args.split,
                                       None if args.split or not args.ids else read_id_file(args.ids), args.max_images)
    scene_path, cams, scene_gt, scene_info, im_ids = (scene.scene_path, scene.cameras, scene.gt, scene.gt_info,
                                                      scene.im_ids)

    repo = bop_io.repo_root()
    ckpt_dir = args.checkpoints or (str(repo / "checkpoints") if (repo / "checkpoints").is_dir() else None)
    deepim = args.deepim
    if deepim is None and args.refine > 0 and ckpt_dir and (Path(ckpt_dir) / "deepim.pt").is_file():
        deepim = str(Path(ckpt_dir) / "deepim.pt")
    if args.init == "dsc" and ckpt_dir is None:
        raise ValueError("--init dsc needs --checkpoints DIR (no <repo>/checkpoints folder); "
                         "or use --init box")
    if args.deepim and args.refine == 0:
        raise ValueError(f"--deepim {args.deepim} with --refine 0 would not be used; give --refine N (the paper: 2-4)")
    if args.refine > 0 and deepim is None:
        raise ValueError("--refine > 0 needs --deepim CKPT (no checkpoints/deepim.pt found); or pass --refine 0")
    segmentation = args.segmentation
    needs_masks = args.align != "off" or args.init == "templates"
    if segmentation is None and needs_masks and ckpt_dir:
        segmentation = str(Path(ckpt_dir) / "segmentation" / "lmo_seg.pt")
    if needs_masks and segmentation is None:
        raise ValueError("--align and --init templates need --segmentation CKPT (no <repo>/checkpoints folder)")
    config = PipelineConfig(init=args.init, dsc_checkpoints=ckpt_dir, self6d_checkpoints=ckpt_dir, deepim_checkpoint=deepim,
                            refine_iterations=args.refine, refiners=refiner_order(args.align, args.refine),
                            segmentation_checkpoint=segmentation, align=AlignConfig(hypotheses=args.align_hypotheses, w_colour=args.align_colour),
                            templates=TemplateConfig(cache_dir=args.template_cache or None), device=args.device, obj_ids=args.obj_ids,
                            box_templates=args.box_templates, dsc_keypoint_scales=args.dsc_scales)
    registry = args.registry or str(repo / "config" / "objects.yaml")
    estimates, skipped = [], Counter()
    n_det, t_pipeline = 0, 0.0
    t_start = time.perf_counter()
    with load_pose_estimator(registry, config, models_dir=args.models_dir) as estimator:
        tracker = None
        if args.track:  # one video: the frames in id order
            im_ids = sorted(im_ids)
            from .tracking import Tracker, TrackingConfig

            tracker = Tracker(estimator, TrackingConfig(min_score=args.track_min_score))
        wanted = set(estimator.obj_ids) if args.obj_ids else None
        for im_id in tqdm(im_ids, desc=PROG, unit="img", disable=args.quiet, dynamic_ncols=True):
            image = read_rgb(find_rgb(scene_path, im_id))
            height, width = image.shape[:2]
            dets = gt_detections(scene_gt, scene_info, args.scene, im_id, width, height, args.box_seed, wanted,
                                 args.max_loosening)
            n_det += len(dets)
            t0 = time.perf_counter()
            results = (tracker or estimator).estimate(image, cams[im_id].K, dets)
            elapsed = time.perf_counter() - t0
            t_pipeline += elapsed
            for r in results:
                if not r.ok:
                    skipped[r.reason.split(" (")[0] if r.reason.startswith("unknown class") else r.reason] += 1
                    continue
                estimates.append(bop_io.PoseEstimate(args.scene, im_id, r.obj_id, r.score, r.R, r.t, elapsed))
        tracking = None if tracker is None else dataclasses.asdict(tracker.stats)
    bop_io.write_bop_results(args.out, estimates)
    return {"images": len(im_ids), "detections": n_det, "estimates": len(estimates), "skipped": dict(skipped),
            "seconds": time.perf_counter() - t_start,
            "pipeline_seconds": t_pipeline, "tracking": tracking}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .data.bop_io import BopFormatError
    from .pipeline import PipelineConfigError

    try:
        summary = run(job_from_args(args))
    except (PipelineConfigError, BopFormatError, FileNotFoundError, ValueError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    per_image = summary["pipeline_seconds"] / max(1, summary["images"])
    print(f"{PROG}: {summary['estimates']} poses for {summary['detections']} detections in {summary['images']} images "
          f"(pipeline {per_image:.3f} s/image, {summary['seconds']:.1f} s in all) -> {args.out}")
    for reason, count in sorted(summary["skipped"].items()):
        print(f"  skipped {count}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
