"""DSC-PoseNet inference time for one object on a 480x640 frame (dsc-posenet sec. 4.3 inference:
both scales, keypoints averaged, PnP with the frame's K), CPU, on LM-O `val`.

    .venv/bin/python bench/bench_dsc_inference.py --checkpoint CKPT [--threads 1] [--frames 50]

Times ``DscPoseNetEstimator.estimate`` on the first ``--frames`` val frames that show the
checkpoint's object (detections = loosened GT visible boxes, seed 0, as ``dsc-pose-predict``), one
warm-up call excluded; reports median / p90 ms and writes the section ``dsc_inference`` of
docs/BENCHMARKS.md. Timing only: the checkpoint's accuracy is reported by the training sections.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch

from benchlib import cpu_model, git_commit, write_section

START, END = "<!-- dsc_inference:start -->", "<!-- dsc_inference:end -->"


def main(argv=None) -> int:
    from dsc_pose_core.data import bop_io
    from dsc_pose_core.models.dsc_posenet import DscPoseNetEstimator
    from dsc_pose_core.predict_cli import gt_detections

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--note", default="", help="what the checkpoint is (for the section)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    estimator = DscPoseNetEstimator.from_checkpoint(args.checkpoint)
    obj_id = estimator.obj_id
    lmo = bop_io.default_lmo_dir()
    scene = bop_io.select_scene_images(lmo, 2, "test", "val")
    times, frames = [], 0
    for im_id in scene.im_ids:
        dets = gt_detections(scene.gt, scene.gt_info, 2, im_id, 640, 480, 0, [obj_id])
        if not dets:
            continue
        image = bop_io.read_rgb(bop_io.find_rgb(scene.scene_path, im_id))
        K = scene.cameras[im_id].K
        with torch.no_grad():
            t0 = time.perf_counter()
            estimator.estimate(image, K, dets[0].box_xywh)
            times.append(time.perf_counter() - t0)
        frames += 1
        if frames > args.frames:
            break
    ms = np.asarray(times[1:]) * 1e3  # first call = warm-up
    cfg = estimator.model.config
    section = "\n".join([
        START,
        "## DSC-PoseNet inference on a 480x640 frame (`bench/bench_dsc_inference.py`)",
        "",
        f"- Machine: {cpu_model()}, no GPU, torch {torch.__version__} with {args.threads} thread(s), "
        f"Python {platform.python_version()}; commit {git_commit()}",
        f"- Command: `python bench/bench_dsc_inference.py --checkpoint {args.checkpoint} --threads {args.threads}`",
        f"- Data: LM-O scene 2 `val`, the first {len(ms)} frames showing object {obj_id} (after one warm-up), "
        "box = GT visible box loosened U(0, 15 %) (seed 0)",
        f"- Model: {cfg.backbone} ({cfg.backbone_stages} stages), un-normalised view {cfg.unnorm_size} px of a "
        f"{cfg.window_px:g} px window, normalised view {cfg.norm_size} px; both scales, keypoints averaged, "
        f"EPnP + LM. {args.note}",
        "- Timings on a shared 2-core machine are noisy; median and p90 of the calls.",
        "",
        "| object | calls | median (ms) | p90 (ms) |",
        "|---|---|---|---|",
        f"| {obj_id} | {len(ms)} | {np.median(ms):.1f} | {np.percentile(ms, 90):.1f} |",
        END,
    ])
    write_section(section, START, END)
    print(f"object {obj_id}: {len(ms)} calls, median {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
