"""Write the segmentation results of runs into ``docs/results/lmo_seg.json`` and the "Segmentation"
section of ``docs/BENCHMARKS.md`` (other sections are kept).

    python -m dsc_pose_core.training.seg_report --main out/lmo_seg [--no-box out/lmo_seg_nobox]
        [--scratch out/lmo_seg_scratch] [--upper-bound out/lmo_seg_upper]

``--scratch``: the same loop with a trunk trained from scratch (the "without pretraining" row);
``--upper-bound``: a run with ``segmentation.real.labels=reference_upper_bound`` (real mask labels: an
upper bound of the method, never a result of it).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ..data import bop_io

NAMES = {1: "ape", 5: "can", 6: "cat", 8: "driller", 9: "duck", 10: "eggbox", 11: "glue", 12: "holepuncher"}


def _fmt(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _row(label: str, summary: dict, obj_ids, suffix: str = "") -> str:
    """suffix "_refined": the masks refined by ``eval.refine`` instead of the network's own."""
    cells = [_fmt(summary["per_object" + suffix].get(str(o))) for o in obj_ids]
    return (f"| {label} | " + " | ".join(cells) + f" | **{_fmt(summary['mean' + suffix])}** | "
            f"{summary['n_targets'] - summary['n_flagged']} ({summary['n_flagged']} flagged) |")


def _compared(run: dict) -> dict:
    seg = run["config"]["segmentation"]
    return {"val_iou_mean": run.get("val_iou_mean"), "val": run.get("val"), "complete": "val" in run,
            "trunk": seg["model"]["encoder"], "pretrained": _pretrained(seg),
            "train_real_iou_per_iter": run["train_real_iou_per_iter"],
            "val_iou_per_iter": run.get("val_iou_per_iter"), "command": run["command"], "timings_s": run["timings"],
            "ablation_without_real_images": run.get("ablation_without_real_images", {}).get("val")}


def _pretrained(seg: dict) -> bool:
    """Whether the run's trunk started from ImageNet weights (ResNets here never do)."""
    from ..models.backbone import TRUNKS

    name = seg["model"]["encoder"]
    return bool(seg["model"].get("pretrained", True) and name in TRUNKS and TRUNKS[name].pretrained)


def _trunk(seg: dict) -> str:
    return f"{seg['model']['encoder']} ({'ImageNet-pretrained' if _pretrained(seg) else 'from scratch'})"


def build(main: dict, no_box: dict | None, scratch: dict | None = None,
          upper: dict | None = None) -> tuple[dict, str]:
    obj_ids = main["obj_ids"]
    seg = main["config"]["segmentation"]
    out = {
        "trunk": seg["model"]["encoder"],
        "val_iou_mean": main["val_iou_mean"],
        "val_iou_per_iter": main.get("val_iou_per_iter"),
        "train_real_iou_per_iter": main["train_real_iou_per_iter"],
        "train_real_iou_no_box_clip_per_iter": main["train_real_iou_no_box_clip_per_iter"],
        "val": main["val"],
        "pseudo_label_iou_per_iter": [it["pseudo_label_iou"] for it in main["iterations"]],
        "command": main["command"],
        "ablation_without_real_images": {"val_iou_mean": main["ablation_without_real_images"]["val"]["mean"],
                                         "val": main["ablation_without_real_images"]["val"]},
        "machine": main.get("machine"),
        "commit": main.get("commit"),
        "timings_s": main["timings"],
        "iteration_timings_s": [{"t": it["t"], "pseudo_label_s": it["pseudo_label_s"], "finetune_s": it["finetune_s"]}
                                for it in main["iterations"]],
        "config": {"encoder": seg["model"]["encoder"], "crop_size": seg["model"]["crop_size"],
                   "pretrained": _pretrained(seg),
                   "frozen_stages": seg["model"].get("frozen_stages", 0),
                   "output_stride": seg["model"].get("output_stride"),
                   "stage0_steps": seg["stage0"]["steps"], "finetune_steps": seg["finetune"]["steps"],
                   "iterations": seg["iterations"], "tta_scales": seg["pseudo"]["tta_scales"],
                   "balance_classes": seg["finetune"].get("balance_classes", False),
                   "prior_correction": seg.get("prior_correction", "none"),
                   "refine": seg["pseudo"].get("refine", "none"), "eval_refine": seg["eval"].get("refine", "none")},
    }
    if "val_refined_iou_mean" in main:
        out["val_refined_iou_mean"] = main["val_refined_iou_mean"]
    if no_box is not None:
        out["ablation_without_boxes"] = {
            "val_iou_mean": no_box.get("val_iou_mean"), "val": no_box.get("val"),
            "complete": "val" in no_box,
            "train_real_iou_per_iter": no_box["train_real_iou_per_iter"], "command": no_box["command"],
            "timings_s": no_box["timings"]}
    if scratch is not None:
        out["without_pretraining"] = _compared(scratch)
    if upper is not None:
        out["upper_bound_with_real_mask_labels"] = _compared(upper)
    header = "| | " + " | ".join(NAMES.get(o, str(o)) for o in obj_ids) + " | mean | targets |"
    sep = "|---" * (len(obj_ids) + 3) + "|"
    lines = [
        "## Segmentation (weakly supervised from 2D boxes, dsc-posenet sec. 3.1)",
        "",
        f"Command: `{main['command']}` (trunk {_trunk(seg)}, {seg['model']['crop_size']} px ROIs, "
        f"stage 0 {seg['stage0']['steps']} steps, T = {seg['iterations']} x {seg['finetune']['steps']} fine-tune steps, "
        f"TTA scales {seg['pseudo']['tta_scales']} x flips). Machine: {main.get('machine')}; commit {main.get('commit')}; "
        f"total {main['timings'].get('total_s', 0) / 60:.1f} min. JSON: `docs/results/lmo_seg.json`.",
        "",
        "Data: LM-O scene 2 (`../shared/data/lmo`): pseudo labels on `train_real` (100 frames; RGB + boxes "
        "loosened by U(0, 15 %) per side, seed 0), the final network on `val` (50 frames, same box rule, seed 0, "
        "predictions clipped to the box). Reference masks are rendered from the GT poses of all 8 objects with "
        "occlusion; the bench vise is not modelled, so targets whose rendered visible pixel count differs from "
        f"`px_count_visib` by more than {100 * seg['eval']['flag_tolerance']:.0f} % are flagged and excluded "
        "(counts in the last column). IoU in %, mean over unflagged targets (per-object columns: mean over that "
        "object's targets).",
        "",
        "Pseudo-label IoU on train_real per iteration (Table 5 protocol: labels of iteration t come from the "
        "network after t - 1 fine-tunings; t = 1 is the synthetic-only network):",
        "",
        header, sep,
    ]
    for it in main["iterations"]:
        lines.append(_row(f"t = {it['t']}", it["pseudo_label_iou"], obj_ids))
    if main.get("val_iou_per_iter"):
        lines += ["", "val IoU after each fine-tuning round t = 1 ... T (the network alone): "
                  + ", ".join(_fmt(x) for x in main["val_iou_per_iter"])
                  + f" (stage 0: {_fmt(main['ablation_without_real_images']['val']['mean'])})."]
    if any("mean_network" in it["pseudo_label_iou"] for it in main["iterations"]):
        lines += ["", f"The labels above are the network's masks refined by {seg['pseudo']['refine']}; the network's "
                  "own masks (P >= 0.5 in the box) scored per iteration: "
                  + ", ".join(_fmt(it["pseudo_label_iou"].get("mean_network")) for it in main["iterations"]) + "."]
    lines += ["", "Final network on val and the ablations of Table 4:", "", header, sep,
              _row("ours (T = %d)" % seg["iterations"], main["val"], obj_ids)]
    if "mean_refined" in main["val"]:
        lines.append(_row(f"ours, masks refined by {seg['eval']['refine']} (not the network alone)", main["val"],
                          obj_ids, "_refined"))
    if no_box is not None and "val" in no_box:
        lines.append(_row(f"w/o 2D boxes (T = {no_box['config']['segmentation']['iterations']}, "
                          "no box clipping in pseudo labels)", no_box["val"], obj_ids))
    lines.append(_row("w/o real images (stage 0 only)", main["ablation_without_real_images"]["val"], obj_ids))
    if scratch is not None and "val" in scratch:
        lines.append(_row(f"w/o pretraining: trunk {_trunk(scratch['config']['segmentation'])}, same loop",
                          scratch["val"], obj_ids))
        lines.append(_row("w/o pretraining, stage 0 only", scratch["ablation_without_real_images"]["val"], obj_ids))
    if upper is not None and "val" in upper:
        lines.append(_row("upper bound: real mask labels on train_real (not box supervision)", upper["val"], obj_ids))
    for name, run in (("w/o pretraining", scratch), ("upper bound (real mask labels)", upper)):
        if run is not None:
            lines += ["", f"{name}: `{run['command']}`; pseudo-label (or label) IoU per iteration: "
                      + ", ".join(_fmt(x) for x in run["train_real_iou_per_iter"])
                      + (f"; val per iteration: {', '.join(_fmt(x) for x in run['val_iou_per_iter'])}"
                         if run.get("val_iou_per_iter") else "") + "."]
    if no_box is not None:
        lines += ["", "Ablation w/o 2D boxes (pseudo labels not clipped to the box, fine-tuned on them, from the same "
                  "stage-0 weights), pseudo-label IoU on train_real per iteration: "
                  + ", ".join(_fmt(x) for x in no_box["train_real_iou_per_iter"])
                  + ("" if "val" in no_box else " (run stopped before the end: no val number)") + "."]
    nb = main["train_real_iou_no_box_clip_per_iter"]
    lines += ["", "Same pseudo-label probabilities scored without box clipping (train_real, per iteration): "
              + ", ".join(_fmt(x) for x in nb) + ".", ""]
    tm = main["timings"]
    lines += ["Run time: synthetic data %.0f s (cached), stage 0 %.0f s, per iteration " % (
        tm.get("synthetic_data_s", 0), tm.get("stage0_s", 0))
        + ", ".join(f"{it['pseudo_label_s']:.0f} + {it['finetune_s']:.0f} s" for it in main["iterations"])
        + " (pseudo labels + fine-tuning), val %.0f s." % tm.get("val_final_s", 0), ""]
    return out, "\n".join(lines)


def write_section(benchmarks: Path, section: str) -> None:
    text = benchmarks.read_text() if benchmarks.exists() else "# Benchmarks\n"
    # the loop's own section only: it ends at the next heading or at the marker of another bench's section
    pattern = re.compile(r"^## Segmentation \(weakly supervised.*?(?=^## |^<!-- |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(section.rstrip() + "\n\n", text)
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    bop_io.atomic_write_text(benchmarks, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--main", required=True, help="run folder of the full loop (results.json)")
    p.add_argument("--no-box", help="run folder of the 'without 2D boxes' ablation")
    p.add_argument("--scratch", help="run folder of the same loop with a trunk from scratch")
    p.add_argument("--upper-bound", help="run folder of segmentation.real.labels=reference_upper_bound")
    p.add_argument("--docs", default=str(bop_io.repo_root() / "docs"))
    args = p.parse_args(argv)

    def read(folder):
        return json.loads((Path(folder) / "results.json").read_text()) if folder else None

    data, section = build(read(args.main), read(args.no_box), read(args.scratch), read(args.upper_bound))
    docs = Path(args.docs)
    (docs / "results").mkdir(parents=True, exist_ok=True)
    bop_io.atomic_write_text(docs / "results" / "lmo_seg.json", json.dumps(data, indent=1))
    write_section(docs / "BENCHMARKS.md", section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
