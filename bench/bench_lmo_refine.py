"""Initial vs DeepIM-refined poses on LM-O `val` (deepim Tables 1 and 3 in miniature).

One command: runs `dsc-pose-predict` on the val split for each initialiser (box-only, and
DSC-PoseNet when checkpoints are given) with 0, 1, 2 and 4 refinement iterations, scores each CSV
with the BOP evaluator, and writes `docs/results/lmo_deepim.json` and the "DeepIM on LM-O val"
section of docs/BENCHMARKS.md.

    python bench/bench_lmo_refine.py --deepim out/lmo_deepim_cpu/checkpoints/deepim_last.pt \
        [--dsc-checkpoints DIR --dsc-obj-ids 5] [--iterations 0,1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from dsc_pose_core.data.bop_io import (PoseEstimate, default_lmo_dir, load_scene_camera, load_scene_gt,
                                       load_scene_gt_info, load_splits, read_bop_results, write_bop_results)
from dsc_pose_core.data.boxes import box_xyxy_edges, loosen_box_xywh
from dsc_pose_core.deepim.noise import sample_pose_noise
from dsc_pose_core.pipeline import PipelineConfig, load_pose_estimator
from dsc_pose_core.eval.bop import evaluate_files
from dsc_pose_core.eval.metrics import rotation_error_deg, translation_error
from dsc_pose_core.predict_cli import main as predict_main

from benchlib import cpu_model, git_commit, write_section

REPO = Path(__file__).resolve().parents[1]
METRICS = ("ADD-S_0.1d", "5cm5deg", "proj2d_5px")
ERRORS = ("median_rot_err_deg", "median_trans_err_cm", "median_depth_err_cm")
BEGIN, END = "<!-- bench_lmo_refine:start -->", "<!-- bench_lmo_refine:end -->"




def _score(report: dict, obj_ids: list[int]) -> dict:
    """Means over the given objects (the evaluator's own means run over every object of the
    targets, which would count objects this run did not predict as zero)."""
    per_object = {int(k): v for k, v in report["per_object"].items() if int(k) in obj_ids}
    row = {m: sum(v[m] for v in per_object.values()) / len(per_object) for m in METRICS}
    row["per_object"] = {k: {m: v[m] for m in METRICS} for k, v in sorted(per_object.items())}
    return row


def _matched_to_gt(estimates: list, gts: dict) -> tuple[list, list]:
    """(estimates, their GT poses): LM-O shows each object once per image, so (im_id, obj_id) names
    the instance; estimates of objects absent from the image are left out."""
    pairs = [(e, g) for e in estimates for g in gts.get(e.im_id, []) if g.obj_id == e.obj_id]
    return [e for e, _ in pairs], [(g.R, g.t) for _, g in pairs]


def run_rows(lmo: Path, init: str, obj_ids: list[int], iterations: list[int], deepim: str,
             dsc_checkpoints: str | None, workdir: Path, val_ids: list[int], align_colour: float | None = None) -> dict:
    """``align_colour`` not None: the test-time aligner runs before DeepIM with that colour weight."""
    rows = {}
    gts = load_scene_gt(lmo / "test" / "000002" / "scene_gt.json")
    for n in iterations:
        csv = workdir / f"{init}_align{align_colour}_refine{n}.csv"
        argv = ["--dataset", str(lmo), "--scene", "2", "--split", "val", "--out", str(csv), "--init", init,
                "--refine", str(n), "--obj-ids", ",".join(map(str, obj_ids)), "--threads", "1", "--quiet"]
        if n > 0:
            argv += ["--deepim", deepim]
        if align_colour is not None:
            argv += ["--align", "before", "--align-colour", str(align_colour),
                     "--segmentation", str(REPO / "checkpoints" / "segmentation" / "lmo_seg.pt")]
        if init == "dsc":
            argv += ["--checkpoints", dsc_checkpoints]
        start = time.perf_counter()
        if predict_main(argv) != 0:
            raise SystemExit(f"dsc-pose-predict failed: {' '.join(argv)}")
        seconds = time.perf_counter() - start
        row = _score(evaluate_files(lmo, csv, im_ids=val_ids), obj_ids)
        row["seconds_per_image"] = seconds / len(val_ids)
        row.update(_median_errors(*_matched_to_gt(read_bop_results(csv), gts)))
        rows["initial" if n == 0 else f"refined_{n}"] = row
        print(f"{init} refine {n}: " + ", ".join(f"{m} {row[m]:.3f}" for m in METRICS), flush=True)
    return rows


def _median_errors(estimates: list, truth: list) -> dict:
    """Median rotation (deg, symmetries ignored), translation and depth errors (cm) against the GT
    poses: where the recalls above are all ~0, these still show what moves."""
    rot = [rotation_error_deg(e.R, R) for e, (R, _) in zip(estimates, truth)]
    trans = [100 * translation_error(e.t, t) for e, (_, t) in zip(estimates, truth)]
    depth = [100 * abs(np.ravel(e.t)[2] - np.ravel(t)[2]) for e, (_, t) in zip(estimates, truth)]
    return {"median_rot_err_deg": float(np.median(rot)), "median_trans_err_cm": float(np.median(trans)),
            "median_depth_err_cm": float(np.median(depth))}


def run_noisy_gt_rows(lmo: Path, obj_ids: list[int], iterations: list[int], deepim: str, workdir: Path,
                      val_ids: list[int], seed: int = 0) -> dict:
    """Diagnostic of the refiner alone (DeepIM's own protocol, sec. 4.1): val GT poses perturbed with
    the training noise of appendix B.1 (seeded) as initial poses. GT is used only on val."""
    scene = lmo / "test" / "000002"
    gts, infos, cameras = (load_scene_gt(scene / "scene_gt.json"), load_scene_gt_info(scene / "scene_gt_info.json"),
                           load_scene_camera(scene / "scene_camera.json"))
    config = PipelineConfig(init="box", deepim_checkpoint=deepim, refine_iterations=max(iterations), obj_ids=obj_ids)
    estimator = load_pose_estimator(REPO / "config" / "objects.yaml", config, models_dir=str(lmo / "models"))
    _ = estimator.renderer
    per_iteration = {n: [] for n in iterations}
    truth: list[tuple[np.ndarray, np.ndarray]] = []
    seconds = 0.0
    for im_id in val_ids:
        rng = np.random.default_rng([seed, im_id])
        image = cv2.cvtColor(cv2.imread(str(scene / "rgb" / f"{im_id:06d}.png")), cv2.COLOR_BGR2RGB)
        kept = [(g, info) for g, info in zip(gts[im_id], infos[im_id])
                if g.obj_id in obj_ids and info.visib_fract >= 0.1]
        if not kept:  # none of the objects in this image (e.g. a one-object run)
            continue
        initial = [(g.obj_id, *sample_pose_noise(rng, g.R, g.t)) for g, _ in kept]
        # the detections of the other rows (for networks that read the detection box)
        boxes = [box_xyxy_edges(loosen_box_xywh(info.bbox_visib, rng, image.shape[1], image.shape[0]))
                 for _, info in kept]
        truth += [(g.R, g.t) for g, _ in kept]
        start = time.perf_counter()
        result = estimator.refiner.refine(image, cameras[im_id].K, initial, max(iterations), boxes=boxes)
        seconds += time.perf_counter() - start
        stages = [(np.stack([r for _, r, _ in initial]), np.stack([v for _, _, v in initial]))] + result.history
        for n in iterations:
            R, t = stages[n]
            per_iteration[n] += [PoseEstimate(2, im_id, o, 1.0, R[i], t[i]) for i, (o, _, _) in enumerate(initial)]
    rows = {}
    for n in iterations:
        csv = workdir / f"noisy_gt_refine{n}.csv"
        write_bop_results(csv, per_iteration[n])
        row = _score(evaluate_files(lmo, csv, im_ids=val_ids), obj_ids)
        row["seconds_per_image"] = seconds / len(val_ids) * n / max(iterations)
        row.update(_median_errors(per_iteration[n], truth))
        rows["initial" if n == 0 else f"refined_{n}"] = row
        print(f"noisy GT refine {n}: " + ", ".join(f"{m} {row[m]:.3f}" for m in METRICS), flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [BEGIN, "## DeepIM on LM-O val (`bench/bench_lmo_refine.py`)", "",
             f"- Machine: {result['machine']}; command: `{result['command']}`; commit {result['commit']}",
             f"- Data: LM-O scene 2, split `val` ({result['n_images']} images), detections = GT visible boxes "
             "loosened U(0, 15 %) per side (seed 0); DeepIM checkpoint "
             f"`{result['deepim_checkpoint']}` ({result['deepim_note']})", "",
             "| initialiser | objects | poses | " + " | ".join(METRICS) + " | s / image | median rot. err. (deg) "
             "| median transl. err. (cm) | median depth err. (cm) |",
             "|---|---|---|" + "---|" * (len(METRICS) + 1 + len(ERRORS))]
    for init, block in result["rows"].items():
        for name, row in block.items():
            if name in ("obj_ids", "init"):
                continue
            label = f"{init} ({block['init']})" if "init" in block else init
            lines.append(f"| {label} | {','.join(map(str, block['obj_ids']))} | {name} | "
                         + " | ".join(f"{row[m]:.3f}" for m in METRICS) + f" | {row['seconds_per_image']:.2f} | "
                         + " | ".join(f"{row[k]:.1f}" if k in row else "" for k in ERRORS) + " |")
    lines += ["", "Metrics are recalls in [0, 1], means over the listed objects (ADD(-S) at 0.1 d). "
              "`noisy_gt_init` (when present) is a diagnostic of the refiner alone: val GT poses perturbed "
              "with the training noise of deepim appendix B.1 (seeded) as initial poses. Median errors: "
              "against the val GT pose of the same object in the image (rotation without symmetries).", END]
    return "\n".join(lines)



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deepim", required=True, help="DeepIM checkpoint")
    parser.add_argument("--deepim-note", default="", help="what the checkpoint is (steps, config)")
    parser.add_argument("--dsc-checkpoints", help="folder of DSC-PoseNet checkpoints (pipeline layout)")
    parser.add_argument("--dsc-obj-ids", default="", help="objects that have DSC-PoseNet checkpoints")
    parser.add_argument("--box-obj-ids", default="1,5,6,8,9,10,11,12")
    parser.add_argument("--iterations", default="0,1,2,4")
    parser.add_argument("--align-init", choices=("dsc", "templates", "box"),
                        help="also refine the test-time aligner's poses from this initialiser (row align_init)")
    parser.add_argument("--align-colour", type=float, default=1.0, help="the aligner's colour weight in that row")
    parser.add_argument("--noisy-gt", action="store_true",
                        help="also refine val GT poses perturbed with the training noise (refiner diagnostic)")
    parser.add_argument("--json", help="write the result here instead of docs/results/lmo_deepim.json and leave "
                                       "docs/BENCHMARKS.md alone (the table is printed): for comparison runs")
    args = parser.parse_args()
    lmo = default_lmo_dir()
    val_ids = load_splits(lmo / "splits.json")["val"]
    iterations = [int(v) for v in args.iterations.split(",")]
    result = {"split": "val", "n_images": len(val_ids), "commit": git_commit(),
              "machine": f"{cpu_model()}, {os.cpu_count()} cores, no GPU",
              "command": "python bench/bench_lmo_refine.py " + " ".join(sys.argv[1:]),
              "deepim_checkpoint": args.deepim, "deepim_note": args.deepim_note, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        box_ids = [int(v) for v in args.box_obj_ids.split(",")]
        result["rows"]["box_init"] = {"obj_ids": box_ids, **run_rows(
            lmo, "box", box_ids, iterations, args.deepim, None, Path(tmp), val_ids)}
        if args.noisy_gt:
            result["rows"]["noisy_gt_init"] = {"obj_ids": box_ids, **run_noisy_gt_rows(
                lmo, box_ids, iterations, args.deepim, Path(tmp), val_ids)}
        if args.dsc_checkpoints:
            dsc_ids = [int(v) for v in args.dsc_obj_ids.split(",")]
            result["rows"]["dsc_init"] = {"obj_ids": dsc_ids, **run_rows(
                lmo, "dsc", dsc_ids, iterations, args.deepim, args.dsc_checkpoints, Path(tmp), val_ids)}
        if args.align_init:
            ids = [int(v) for v in (args.dsc_obj_ids if args.align_init == "dsc" else args.box_obj_ids).split(",")]
            result["rows"]["align_init"] = {"obj_ids": ids, "init": f"{args.align_init}+align (colour {args.align_colour:g})",
                                            **run_rows(lmo, args.align_init, ids, iterations, args.deepim,
                                                       args.dsc_checkpoints, Path(tmp), val_ids, args.align_colour)}
    out = Path(args.json) if args.json else REPO / "docs" / "results" / "lmo_deepim.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(markdown(result))
        print(f"wrote {out}")
    else:
        write_section(markdown(result), BEGIN, END)
        print(f"wrote {out} and docs/BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
