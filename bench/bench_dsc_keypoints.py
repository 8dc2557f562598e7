"""How far DSC-PoseNet's keypoints are from the truth, per view scale, before PnP.

Where the pose recalls of a checkpoint are all ~0 they cannot tell an untrained network from a
domain gap; this can: for every instance of the object in a BOP scene (GT poses, the visible box as
the detection) it runs `DscPoseNetEstimator` and measures the mean distance between the predicted
and the projected 3D keypoints in units of the box's longer side, for the un-normalised view, the
normalised view and their ensemble, and the spread of the predicted keypoints relative to the true
spread (< 1: keypoints pulled towards the centre). Run it on the synthetic training renders and on
LM-O `val` with the same checkpoint: similar errors = underfitting, a much larger val error =
domain gap.

    python bench/bench_dsc_keypoints.py --split val \
        --case lb out/RUN/checkpoints/dsc_lb.pt ../shared/data/lmo/test/000002 \
        --case lb out/RUN/checkpoints/dsc_lb.pt out/SYNTH/train_synt/000000

Writes the "DSC-PoseNet keypoint errors" section of docs/BENCHMARKS.md (one row per case).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from dsc_pose_core.data.bop_io import (find_rgb, load_scene_camera, load_scene_gt, load_scene_gt_info, load_splits,
                                       read_rgb)
from dsc_pose_core.models.dsc_posenet import DscPoseNetEstimator

from benchlib import cpu_model, git_commit, write_section

BEGIN, END = "<!-- bench_dsc_keypoints:start -->", "<!-- bench_dsc_keypoints:end -->"


def measure(checkpoint: Path, scene: Path, im_ids: list[int] | None, max_instances: int) -> dict:
    estimator = DscPoseNetEstimator.from_checkpoint(checkpoint)
    obj_id = estimator.obj_id
    gts = load_scene_gt(scene / "scene_gt.json")
    infos = load_scene_gt_info(scene / "scene_gt_info.json")
    cameras = load_scene_camera(scene / "scene_camera.json")
    errors = {"unnorm": [], "norm": [], "ensemble": []}
    spread = []
    for im_id in sorted(gts) if im_ids is None else im_ids:
        if len(spread) >= max_instances:
            break
        for gt, info in zip(gts[im_id], infos[im_id]):
            if gt.obj_id != obj_id or info.visib_fract < 0.1:
                continue
            K = cameras[im_id].K
            estimate = estimator.estimate(read_rgb(find_rgb(scene, im_id)), K, info.bbox_visib)
            cam = estimator.keypoints_3d @ gt.R.T + np.ravel(gt.t)
            truth = (K[:2, :2] @ (cam[:, :2] / cam[:, 2:3]).T).T + K[:2, 2]
            side = max(info.bbox_visib[2], info.bbox_visib[3], 1)
            for name, predicted in (("unnorm", estimate.keypoints_unnorm), ("norm", estimate.keypoints_norm),
                                    ("ensemble", estimate.keypoints)):
                errors[name].append(float(np.linalg.norm(predicted - truth, axis=1).mean() / side))
            spread.append(float(np.linalg.norm(estimate.keypoints - estimate.keypoints.mean(0), axis=1).mean()
                                / max(np.linalg.norm(truth - truth.mean(0), axis=1).mean(), 1e-6)))
    if not spread:
        raise SystemExit(f"no instance of object {obj_id} in {scene}")
    return {"obj_id": obj_id, "n": len(spread),
            **{f"median_error_{k}": float(np.median(v)) for k, v in errors.items()},
            "median_spread_ratio": float(np.median(spread))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs=3, action="append", required=True, metavar=("NAME", "CHECKPOINT", "SCENE_DIR"),
                        help="a checkpoint measured on a BOP scene folder (repeatable)")
    parser.add_argument("--split", default="", help="image ids of this split from the dataset's splits.json "
                        "(for scenes of a dataset that has one; others use every image)")
    parser.add_argument("--max-instances", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, path, scene_dir in args.case:
        scene = Path(scene_dir)
        splits_file = scene.parents[1] / "splits.json"
        im_ids = load_splits(splits_file)[args.split] if args.split and splits_file.is_file() else None
        row = measure(Path(path), scene, im_ids, args.max_instances)
        row.update(name=name, checkpoint=path, scene=str(scene), split=args.split if im_ids is not None else "all images")
        print(json.dumps(row), flush=True)
        rows.append(row)
    command = "python bench/bench_dsc_keypoints.py " + " ".join(sys.argv[1:])
    lines = [BEGIN, "## DSC-PoseNet keypoint errors before PnP (`bench/bench_dsc_keypoints.py`)", "",
             f"- Machine: {cpu_model()}, {platform.machine()}, torch 1 thread; commit {git_commit()}",
             f"- Command: `{command}`",
             "- Error: mean over the keypoints of |predicted - projected true keypoint| / longer side of the "
             "visible box, median over instances (detection = the GT visible box); spread ratio: mean distance "
             "of the predicted keypoints from their centroid over the same for the true ones (< 1: pulled in).", "",
             "| checkpoint | object | scene | split | instances | un-normalised | normalised | ensemble | spread ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['obj_id']} | `{r['scene']}` | {r['split']} | {r['n']} | "
                     f"{r['median_error_unnorm']:.2f} | {r['median_error_norm']:.2f} | {r['median_error_ensemble']:.2f} | "
                     f"{r['median_spread_ratio']:.2f} |")
    lines.append(END)
    write_section("\n".join(lines), BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
