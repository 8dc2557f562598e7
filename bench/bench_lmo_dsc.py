"""DSC-PoseNet on LM-O `val`: the LB / Self / UB table (dsc-posenet Tables 1 and 4 in miniature).

One command scores folders of per-object checkpoints (``obj_XXXXXX.pt``, the pipeline's layout)
with `dsc-pose-predict --init dsc --refine 0` (detections = GT visible boxes loosened U(0, 15 %),
seed 0) and the BOP evaluator, and writes `docs/results/lmo_dsc.json` and the section
"DSC-PoseNet on LM-O val: LB / Self / UB" of docs/BENCHMARKS.md:

    python bench/bench_lmo_dsc.py --row Self=checkpoints/dsc_posenet \
        --row LB=out/lmo_dsc_table/lb --row UB=out/lmo_dsc_table/ub \
        [--row "Self, normalised scale only=checkpoints/dsc_posenet:norm"] [--note "LB=how it was trained"]

A row is NAME=DIR[:SCALES][:align] with SCALES both (default, the paper's inference), unnorm or norm;
``:align`` adds the test-time aligner after the network (``dsc-pose-predict --align after``, masks of
``checkpoints/segmentation/lmo_seg.pt``). Means
run over the objects the table asks for (``--obj-ids``); an object without a checkpoint in a row's
folder counts as missing and the row says so (its mean is then over fewer objects).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchlib import cpu_model, git_commit, write_section

REPO = Path(__file__).resolve().parents[1]
METRICS = ("ADD-S_0.1d", "5cm5deg", "proj2d_5px", "AR_MSPD", "AR_MSSD")
BEGIN, END = "<!-- bench_lmo_dsc:start -->", "<!-- bench_lmo_dsc:end -->"
LMO_IDS = "1,5,6,8,9,10,11,12"


def parse_row(text: str) -> tuple[str, Path, str]:
    """NAME=DIR[:SCALES][:align] -> (name, folder, scales), scales with "+align" when the aligner runs."""
    name, sep, spec = text.rpartition("=")  # names may hold "=", folders do not
    if not sep or not name.strip():
        raise SystemExit(f"--row needs NAME=DIR[:SCALES][:align], got {text!r}")
    directory, *options = spec.split(":")
    align = "align" in options
    options = [o for o in options if o != "align"]
    if len(options) > 1:
        raise SystemExit(f"--row {name}: NAME=DIR[:SCALES][:align], got {text!r}")
    scales = options[0] if options and options[0] else "both"
    if scales not in ("both", "unnorm", "norm"):
        raise SystemExit(f"--row {name}: scales must be both, unnorm or norm, got {scales!r}")
    return name.strip(), Path(directory), scales + ("+align" if align else "")


def depth_errors(gt: dict, csv: Path, diameters: dict) -> dict:
    """Per object: the median relative depth error |z_est / z_true - 1| of the estimates (matched to
    the image's instance of that object; LM-O has one per object) and the median relative depth error
    ADD at 0.1 d tolerates, 0.1 d / z_true (a pose with only a depth error e passes iff e z_true < 0.1 d).
    ``gt``: the scene's ground truth (``load_scene_gt``), read once for all rows."""
    import numpy as np

    from dsc_pose_core.data.bop_io import read_bop_results

    errors: dict[int, list[float]] = {}
    tolerances: dict[int, list[float]] = {}
    rotations: dict[int, list[float]] = {}
    for est in read_bop_results(csv):
        truth = [g for g in gt.get(est.im_id, []) if g.obj_id == est.obj_id]
        if len(truth) != 1 or est.obj_id not in diameters:
            continue
        z_true = float(truth[0].t[2])
        errors.setdefault(est.obj_id, []).append(abs(float(est.t[2]) / z_true - 1.0))
        cos = (np.trace(np.asarray(truth[0].R).T @ np.asarray(est.R)) - 1.0) / 2.0
        rotations.setdefault(est.obj_id, []).append(float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
        tolerances.setdefault(est.obj_id, []).append(0.1 * diameters[est.obj_id] / z_true)
    return {o: {"depth_rel_err_median": float(np.median(errors[o])),
                "rot_err_median_deg": float(np.median(rotations[o])),
                "add_depth_tolerance_median": float(np.median(tolerances[o]))} for o in errors}


def score_row(lmo: Path, directory: Path, scales: str, obj_ids: list[int], workdir: Path, val_ids,
              gt: dict, diameters: dict) -> dict:
    from dsc_pose_core.eval.bop import evaluate_files
    from dsc_pose_core.pipeline import find_dsc_checkpoint
    from dsc_pose_core.predict_cli import main as predict_main

    present = [o for o in obj_ids if find_dsc_checkpoint(directory, o) is not None]
    missing = [o for o in obj_ids if o not in present]
    if not present:
        raise SystemExit(f"{directory}: no obj_XXXXXX.pt for any of {obj_ids}")
    csv = workdir / f"{directory.name}_{scales}.csv"
    network_scales, _, align = scales.partition("+")
    argv = ["--dataset", str(lmo), "--scene", "2", "--split", "val", "--out", str(csv), "--init", "dsc",
            "--refine", "0", "--checkpoints", str(directory), "--obj-ids", ",".join(map(str, present)),
            "--threads", "1", "--quiet", "--dsc-scales", network_scales]
    if align:
        argv += ["--align", "after", "--segmentation", str(REPO / "checkpoints" / "segmentation" / "lmo_seg.pt")]
    start = time.perf_counter()
    if predict_main(argv) != 0:
        raise SystemExit(f"dsc-pose-predict failed: {' '.join(argv)}")
    seconds = time.perf_counter() - start
    report = evaluate_files(lmo, csv, im_ids=val_ids)
    per_object = {o: {m: float(report["per_object"][str(o)][m]) for m in METRICS} for o in present}
    for o, errors in depth_errors(gt, csv, diameters).items():
        if o in per_object:
            per_object[o].update(errors)
    row = {m: sum(v[m] for v in per_object.values()) / len(per_object) for m in METRICS}
    row.update(per_object={str(o): v for o, v in per_object.items()}, checkpoints=str(directory), scales=scales,
               missing_objects=missing, seconds_per_image=seconds / len(val_ids))
    return row


def markdown(result: dict, names: dict) -> str:
    ids = result["obj_ids"]
    head = "| row | " + " | ".join(names.get(o, str(o)) for o in ids) + " | mean ADD(-S) | 5cm5deg | proj2d_5px | AR_MSPD | AR_MSSD |"
    lines = [BEGIN, "## DSC-PoseNet on LM-O val: LB / Self / UB (`bench/bench_lmo_dsc.py`)", "",
             f"- Machine: {result['machine']}; commit {result['commit']}",
             f"- Command: `{result['command']}`",
             f"- Data: LM-O scene 2, split `val` ({result['n_images']} images); detections = GT visible boxes "
             "loosened U(0, 15 %) per side (seed 0); inference as `dsc-pose-predict --init dsc --refine 0` "
             "(both scales averaged unless the row says otherwise, EPnP with the frame's K)",
             "- Per-object cells: ADD(-S) recall at 0.1 d (ADD-S for the symmetric eggbox and glue); the means "
             "are over the row's objects. UB (train_real pose labels) is an upper bound, not a result of the "
             "method.", "", head, "|---|" + "---|" * (len(ids) + 5)]
    for name, row in result["rows"].items():
        cells = [f"{row['per_object'][str(o)]['ADD-S_0.1d']:.3f}" if str(o) in row["per_object"] else "-" for o in ids]
        lines.append(f"| {name} | " + " | ".join(cells) + " | "
                     + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |")
    lines += ["", "AR_MSPD per object (the BOP average recall of the maximum symmetry-aware projection distance, "
              "5-50 px: it separates runs whose ADD(-S) is 0):", "",
              "| row | " + " | ".join(names.get(o, str(o)) for o in ids) + " |", "|---|" + "---|" * len(ids)]
    for name, row in result["rows"].items():
        cells = [f"{row['per_object'][str(o)]['AR_MSPD']:.3f}" if str(o) in row["per_object"] else "-" for o in ids]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    tolerance = {}
    for row in result["rows"].values():
        for o, v in row["per_object"].items():
            tolerance.setdefault(o, v.get("add_depth_tolerance_median"))
    lines += ["", "Median relative depth error |z_est / z_true - 1| per object; last line: the relative depth "
              "error ADD at 0.1 d tolerates, 0.1 d / z_true (median over the targets). ADD, the mean distance "
              "between the model's points at the two poses, is at least the distance between the two "
              "positions of their mean point, so a non-symmetric object passes only if its depth is about that "
              "close, whatever its rotation (ADD-S, for eggbox and glue, is more lenient).", "",
              "| row | " + " | ".join(names.get(o, str(o)) for o in ids) + " | mean |", "|---|" + "---|" * (len(ids) + 1)]
    for name, row in [*result["rows"].items(), ("ADD depth tolerance", None)]:
        values = [(row["per_object"].get(str(o), {}).get("depth_rel_err_median") if row is not None
                   else tolerance.get(str(o))) for o in ids]
        cells = ["-" if v is None else f"{v:.3f}" for v in values]
        known = [v for v in values if v is not None]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(known) / len(known):.3f} |")
    lines += ["", "Median rotation error (degrees, geodesic distance to the ground truth's rotation; for the "
              "symmetric eggbox and glue it ignores their symmetry):", "",
              "| row | " + " | ".join(names.get(o, str(o)) for o in ids) + " | mean |", "|---|" + "---|" * (len(ids) + 1)]
    for name, row in result["rows"].items():
        values = [row["per_object"].get(str(o), {}).get("rot_err_median_deg") for o in ids]
        known = [v for v in values if v is not None]
        lines.append(f"| {name} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in values)
                     + (f" | {sum(known) / len(known):.1f} |" if known else " | - |"))
    notes = [f"- {name}: `{row['checkpoints']}`, scales {row['scales']}"
             + (f"; {result['notes'][name]}" if name in result["notes"] else "")
             + (f"; missing objects {row['missing_objects']}" if row["missing_objects"] else "")
             for name, row in result["rows"].items()]
    lines += ["", "Rows:", *notes, END]
    return "\n".join(lines)


def main(argv=None) -> int:
    from dsc_pose_core.data.bop_io import default_lmo_dir, load_scene_gt, load_splits, scene_dir
    from dsc_pose_core.objects.registry import ObjectRegistry

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--row", action="append", required=True, help="NAME=DIR[:both|unnorm|norm]")
    p.add_argument("--note", action="append", default=[], help="NAME=text: how that row's models were trained")
    p.add_argument("--obj-ids", default=LMO_IDS)
    p.add_argument("--json", default=str(REPO / "docs" / "results" / "lmo_dsc.json"))
    args = p.parse_args(argv)
    rows = [parse_row(r) for r in args.row]
    notes = {}
    for note in args.note:  # NAME=text, NAME one of the rows (either may hold "=")
        name = next((n for n, _, _ in rows if note.startswith(n + "=")), None)
        if name is None:
            raise SystemExit(f"--note {note!r}: starts with no row name followed by '='")
        notes[name] = note[len(name) + 1:]
    obj_ids = [int(v) for v in args.obj_ids.split(",")]
    lmo = default_lmo_dir()
    val_ids = load_splits(lmo / "splits.json")["val"]
    registry = ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")
    names = {o: registry[o].name for o in obj_ids if o in registry}
    diameters = {o: registry[o].model_info.diameter for o in obj_ids if o in registry}
    gt = load_scene_gt(scene_dir(lmo, 2) / "scene_gt.json")
    result = {"split": "val", "n_images": len(val_ids), "obj_ids": obj_ids, "commit": git_commit(),
              "machine": f"{cpu_model()}, {os.cpu_count()} cores, no GPU",
              "command": "python bench/bench_lmo_dsc.py " + " ".join(
                  f"--row '{r}'" for r in args.row) + "".join(f" --note '{n}'" for n in args.note)
              + (f" --obj-ids {args.obj_ids}" if args.obj_ids != LMO_IDS else ""),
              "notes": notes, "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, directory, scales in rows:
            row = score_row(lmo, directory, scales, obj_ids, Path(tmp), val_ids, gt, diameters)
            result["rows"][name] = row
            print(f"{name}: " + ", ".join(f"{m} {row[m]:.3f}" for m in METRICS), flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    write_section(markdown(result, names), BEGIN, END)
    print(f"wrote {out} and docs/BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
