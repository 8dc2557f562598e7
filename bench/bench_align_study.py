"""What limits test-time alignment on LM-O `val`: the aligner's terms, hypotheses and masks, one at a time.

One command: DSC-PoseNet's initial poses for every val detection (the committed checkpoints; detections =
GT visible boxes loosened U(0, 15 %), seed 0) are computed once, the segmentation network's masks once,
then ``dsc_pose_core.align.align`` runs from them under each variant below. Writes
`docs/results/lmo_align_study.json` and the "Test-time alignment: what limits it" section of
docs/BENCHMARKS.md.

    python bench/bench_align_study.py [--every 1] [--variants default,gt_masks,...] [--start dsc|templates]

``--start templates``: the starts are the template initialiser's (``dsc_pose_core.templates``) instead of
DSC-PoseNet's; written to `docs/results/lmo_align_study_templates.json` and its own BENCHMARKS section.

Variants (``AlignConfig`` changes from the default): ``no_edges`` (w_edge 0), ``iou`` (soft IoU instead of
Dice), ``all_edges`` (every image edge of the crop, not only those near the mask's outline, w_edge 0.5), ``flips`` / ``cube24`` (rotation hypotheses, 2 refined), ``colour`` (w_colour 1: vertex-colour
agreement in the energy), ``other_masks`` (the frame's other detections as occluders), and ``gt_masks``:
the mask probability replaced by the object's silhouette rendered at its val ground-truth pose (whole
silhouette, occlusion ignored), an upper bound of what better masks give this optimiser; ``gt_rotation``:
the start's rotation replaced by the ground truth's (DSC-PoseNet's translation kept), what a better
initial rotation would give with today's masks. ADD(-S) here is
per target (every val detection with its (image, object) ground truth), not the BOP evaluator's object mean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dsc_pose_core.align import AlignConfig, align, confidence, observe, score_features
from dsc_pose_core.data.boxes import box_xyxy_edges
from dsc_pose_core.data.bop_io import default_lmo_dir, find_rgb, load_splits, read_rgb, select_scene_images
from dsc_pose_core.eval.bop import load_eval_data
from dsc_pose_core.eval.metrics import add_or_add_s, rotation_error_deg
from dsc_pose_core.models.segmentation import MaskPredictor
from dsc_pose_core.objects.registry import ObjectRegistry
from dsc_pose_core.pipeline import PipelineConfig, PoseEstimator
from dsc_pose_core.predict_cli import gt_detections
from dsc_pose_core.render import FastRenderer
from dsc_pose_core.defaults import TEMPLATE_CACHE
from dsc_pose_core.templates import TemplateConfig
from dsc_pose_core.segmentation import roi

from bench_lmo_pipeline import auroc
from benchlib import cpu_model, git_commit, write_section

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench_align_study:start -->", "<!-- bench_align_study:end -->"
VARIANTS = {
    "default": {},
    "no_edges": {"w_edge": 0.0},
    "iou": {"recall_beta": 0.0},
    "flips": {"hypotheses": "flips", "keep": 2},
    "cube24": {"hypotheses": "cube24", "keep": 2},
    "colour": {"w_colour": 1.0},
    "colour_other_masks": {"w_colour": 1.0, "other_masks": True},
    "colour_10_rounds": {"w_colour": 1.0, "rounds": 10},
    "other_masks": {"other_masks": True},
    "all_edges": {"edge_band": 0.0, "w_edge": 0.5},
    "gt_masks": {},
    "gt_rotation": {},
}


def initial_poses(registry, every: int, start: str = "dsc") -> list[dict]:
    """The initialiser's (``start``: DSC-PoseNet or templates) poses of every val detection, with the image, K,
    box and ground truth."""
    lmo = default_lmo_dir()
    scene = select_scene_images(lmo, 2, "test", "val", None, 0)
    items = []
    with PoseEstimator(registry, PipelineConfig(init=start, dsc_checkpoints=str(REPO / "checkpoints"),
                                                segmentation_checkpoint=REPO / "checkpoints" / "segmentation" / "lmo_seg.pt",
                                                templates=TemplateConfig(cache_dir=TEMPLATE_CACHE),
                                                refine_iterations=0)) as estimator:
        for im_id in scene.im_ids:
            image = read_rgb(find_rgb(scene.scene_path, im_id))
            dets = gt_detections(scene.gt, scene.gt_info, 2, im_id, image.shape[1], image.shape[0], 0)
            truth = {g.obj_id: g for g in scene.gt[im_id]}
            for r in estimator.estimate(image, scene.cameras[im_id].K, dets):
                if r.ok:
                    items.append({"im_id": im_id, "image": image, "K": scene.cameras[im_id].K, "obj_id": r.obj_id,
                                  "box": r.box_xywh, "R": r.R, "t": r.t, "gt": truth[r.obj_id]})
    return items[::every]


def _logistic_fit(X: np.ndarray, y: np.ndarray, steps: int = 3000, lr: float = 0.1, l2: float = 1e-2):
    """(weights, bias) of a logistic regression of y on X (standardised inside, returned in X's units)."""
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = (X - mu) / sd
    w, b = np.zeros(X.shape[1]), 0.0
    for _ in range(steps):
        g = 1 / (1 + np.exp(-(Z @ w + b))) - y
        w -= lr * (Z.T @ g / len(y) + l2 * w)
        b -= lr * g.mean()
    return w / sd, float(b - (mu / sd) @ w)


def confidence_study(features: np.ndarray, correct: np.ndarray, config: AlignConfig, folds: int = 5) -> dict:
    """AUROC of the shipped confidence (``AlignConfig`` weights) on the default variant's poses, and of
    logistic regressions refitted here: in-sample and ``folds``-fold cross-validated (folds drawn with seed 0),
    with and without the symmetry term. ``features``: [N, 3] (energy, colour agreement, symmetric)."""
    shipped = np.array([confidence(e, c, config, bool(s)) for e, c, s in features])
    out = {"confidence_auroc_shipped_weights": auroc(shipped, correct)}
    fold = np.random.default_rng(0).integers(0, folds, len(correct))
    y = correct.astype(float)
    for name, cols in (("energy_colour_symmetry", [0, 1, 2]), ("energy_colour", [0, 1])):
        X = features[:, cols]
        w, b = _logistic_fit(X, y)
        out[f"refit_{name}"] = {"weights": [float(v) for v in w], "bias": b, "auroc_in_sample": auroc(X @ w + b, correct)}
        held = np.zeros(len(y))
        for k in range(folds):
            w, b = _logistic_fit(X[fold != k], y[fold != k])
            held[fold == k] = X[fold == k] @ w + b
        out[f"refit_{name}"]["auroc_cv"] = auroc(held, correct)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="every n-th val detection (1: all)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {tuple(VARIANTS)}")
    parser.add_argument("--json", help="write here instead of docs/results/lmo_align_study.json (BENCHMARKS untouched)")
    parser.add_argument("--start", default="dsc", choices=("dsc", "templates"), help="the initialiser of the starts")
    args = parser.parse_args()
    global BEGIN, END
    if args.start != "dsc":
        BEGIN, END = (f"<!-- bench_align_study_{args.start}:start -->", f"<!-- bench_align_study_{args.start}:end -->")
    variants = [v for v in args.variants.split(",") if v]
    if any(v not in VARIANTS for v in variants):
        parser.error(f"variants must come from {tuple(VARIANTS)}")
    torch.set_num_threads(1)
    registry = ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")
    lmo = default_lmo_dir()
    data = load_eval_data(lmo, im_ids=load_splits(lmo / "splits.json")["val"])
    items = initial_poses(registry, args.every, args.start)
    masks = MaskPredictor.from_checkpoint(REPO / "checkpoints" / "segmentation" / "lmo_seg.pt")
    base = AlignConfig()
    renderer = FastRenderer(masks.crop_size, masks.crop_size)
    for o in registry.ids:
        renderer.add_object(o, registry[o].mesh.decimated(base.render_faces))
    # the masks of each frame's detections, once (the variants share them)
    frames: dict[int, list[dict]] = {}
    for item in items:
        frames.setdefault(item["im_id"], []).append(item)
    for frame in frames.values():
        image = frame[0]["image"]
        predicted = masks.predict(image, [(i["obj_id"], box_xyxy_edges(i["box"])) for i in frame])
        full = [roi.paste(p, w, image.shape[1], image.shape[0]) for p, w in predicted]
        for k, (item, (p, w)) in enumerate(zip(frame, predicted)):
            others = [f for j, f in enumerate(full) if j != k]
            item.update(probability=p, window=w, others=np.max(others, axis=0) if others else None)
    result = {"split": "val", "targets": len(items), "commit": git_commit(),
              "machine": f"{cpu_model()}, {os.cpu_count()} cores, no GPU",
              "command": "python bench/bench_align_study.py " + " ".join(sys.argv[1:]), "rows": {}}
    start_all = time.perf_counter()
    start = [add_or_add_s(i["R"], i["t"], i["gt"].R, i["gt"].t, data.objects[i["obj_id"]].points,
                          data.objects[i["obj_id"]].symmetric) < 0.1 * data.objects[i["obj_id"]].diameter
             for i in items]
    result["start"] = args.start
    start_rot = np.array([rotation_error_deg(i["R"], i["gt"].R) for i in items])
    asymmetric = np.array([not data.objects[i["obj_id"]].symmetric for i in items])
    result["start_rotation_err_deg_median_asymmetric"] = float(np.median(start_rot[asymmetric]))
    result["start_rotation_within_30deg_asymmetric"] = float(np.mean(start_rot[asymmetric] < 30))
    result["dsc_ADD-S_0.1d" if args.start == "dsc" else "start_ADD-S_0.1d"] = float(np.mean(start))
    result["dsc_median_depth_err" if args.start == "dsc" else "start_median_depth_err"] = float(
        np.median([abs(i["t"][2] / i["gt"].t[2] - 1) for i in items]))
    for name in variants:
        config = replace(base, **VARIANTS[name])
        correct, depth, rot, ms, energy, features = [], [], [], [], [], []
        for item in items:
            t0 = time.perf_counter()
            obs = observe(item["image"], item["K"], item["probability"], item["window"], config,
                          item["others"] if config.other_masks else None)
            if name == "gt_masks":
                gt = renderer.render_batch(obs.K, item["obj_id"], item["gt"].R[None], item["gt"].t[None], obs.size,
                                           obs.size, rgb=False)
                obs.probability = (gt.instance[0] > 0).astype(np.float32)
            R0 = item["gt"].R if name == "gt_rotation" else item["R"]
            R, t, E, _ = align(renderer, item["obj_id"], R0, item["t"], obs, config)
            ms.append(1000 * (time.perf_counter() - t0))
            obj = data.objects[item["obj_id"]]
            correct.append(add_or_add_s(R, t, item["gt"].R, item["gt"].t, obj.points, obj.symmetric) < 0.1 * obj.diameter)
            depth.append(abs(t[2] / item["gt"].t[2] - 1))
            rot.append(rotation_error_deg(R, item["gt"].R))
            energy.append(E)
            if name in ("default", "colour"):  # the confidence of the two searches users run
                features.append([*score_features(renderer, item["obj_id"], R, t, obs, config), float(obj.symmetric)])
        correct = np.array(correct)
        row = {"ADD-S_0.1d": float(correct.mean()), "median_depth_err": float(np.median(depth)),
               "median_rot_err_deg": float(np.median(rot)), "ms_p50": float(np.median(ms)),
               "energy_auroc": auroc(-np.array(energy), correct), "config": VARIANTS[name]}
        if features:
            row.update(confidence_study(np.array(features), correct, config))
        result["rows"][name] = row
        print(f"{name}: ADD(-S) {row['ADD-S_0.1d']:.3f}, depth {100 * row['median_depth_err']:.1f} %, "
              f"rot {row['median_rot_err_deg']:.0f} deg, {row['ms_p50']:.0f} ms", flush=True)
    renderer.close()
    result["seconds"] = time.perf_counter() - start_all
    suffix = "" if args.start == "dsc" else f"_{args.start}"
    out = Path(args.json) if args.json else REPO / "docs" / "results" / f"lmo_align_study{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    key = "dsc" if args.start == "dsc" else "start"
    who = {"dsc": "DSC-PoseNet's pose", "templates": "the template initialiser's pose"}[args.start]
    title = "what limits it" if args.start == "dsc" else f"from the {args.start} initialiser"
    lines = [BEGIN, f"## Test-time alignment: {title} (`bench/bench_align_study.py`)", "",
             f"- Machine: {result['machine']}; command: `{result['command']}`; commit {result['commit']}",
             f"- Data: LM-O scene 2, split `val`, {result['targets']} detections (GT visible boxes loosened, seed 0), "
             f"each aligned from {who} (ADD(-S) {result[key + '_ADD-S_0.1d']:.3f}, median depth error "
             f"{100 * result[key + '_median_depth_err']:.1f} % before alignment; rotation error of the starts, objects "
             f"without symmetry: median {result['start_rotation_err_deg_median_asymmetric']:.0f} deg, "
             f"{100 * result['start_rotation_within_30deg_asymmetric']:.0f} % within 30 deg); ADD(-S) per target", "",
             "| variant | change | ADD(-S) 0.1d | median depth err. | median rot. err. (deg) | ms / object p50 | "
             "energy AUROC |", "|---|---|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        change = ", ".join(f"{k}={v}" for k, v in row["config"].items()) or (
            {"gt_masks": "GT silhouette as the mask (upper bound)",
             "gt_rotation": "start from the GT rotation (upper bound)"}.get(name, "-"))
        auc = row["energy_auroc"]
        lines.append(f"| {name} | {change} | {row['ADD-S_0.1d']:.3f} | {100 * row['median_depth_err']:.1f} % | "
                     f"{row['median_rot_err_deg']:.0f} | {row['ms_p50']:.0f} | {'-' if auc is None else f'{auc:.2f}'} |")
    for variant, conf in result["rows"].items():
        if "confidence_auroc_shipped_weights" not in conf:
            continue
        full, plain = conf["refit_energy_colour_symmetry"], conf["refit_energy_colour"]
        lines += ["" if lines[-1].startswith("|") else None,
                  f"- Confidence of the {variant} variant's poses (ADD(-S) correct vs not; energy = mask + edge terms): "
                  f"AUROC {conf['confidence_auroc_shipped_weights']:.3f} with the shipped weights (`AlignConfig.score_w_*`); "
                  f"refitted here (energy, colour agreement, symmetry) {full['auroc_in_sample']:.3f} in sample, "
                  f"{full['auroc_cv']:.3f} 5-fold cross-validated; without the symmetry term "
                  f"{plain['auroc_in_sample']:.3f} / {plain['auroc_cv']:.3f}"]
        lines = [line for line in lines if line is not None]
    lines.append(END)
    if args.json:
        print("\n".join(lines))
    else:
        write_section("\n".join(lines), BEGIN, END)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
