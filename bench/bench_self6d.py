"""Self6D experiments (issue: LB vs Self6D vs the paper's Table 1 ablations on a target domain, and
the visual-only variant on real LM-O RGB). One command:

    python bench/bench_self6d.py            # trains what is missing (~45 min on 2 CPU cores), then reports
    python bench/bench_self6d.py --report   # only collects the runs' results.json files

Runs (each ``python training/train.py ...``, outputs under out/):
  target      config/train/self6d_target_cpu.yaml: stage synthetic (source renders) -> LB, stage self
              on unlabeled target-domain RGB-D -> Self6D; scored on held-out target images
  no_mask     stage self only, from target's synthetic checkpoint, L_mask weight 0
  no_geom     stage self only, from target's synthetic checkpoint, L_geom weight 0
  lmo_rgb     config/train/self6d_lmo_rgb_cpu.yaml: stage self on LM-O train_real RGB + pseudo masks
              (eq. 4-8, no depth), from target's synthetic checkpoint; scored on LM-O val
Writes docs/results/self6d.json and its section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, cpu_model, git_commit, write_section  # noqa: E402

SYNTHETIC_CKPT = "out/self6d_target/checkpoints/self6d_synthetic.pt"
ABLATION = ["self6d.stages=[self]", f"self6d.init_checkpoint={SYNTHETIC_CKPT}"]
RUNS = {
    "target": ["--config", "config/train/self6d_target_cpu.yaml", "out=out/self6d_target"],
    "no_mask": ["--config", "config/train/self6d_target_cpu.yaml", "out=out/self6d_target_nomask", *ABLATION,
                "self6d.loss.mask=0"],
    "no_geom": ["--config", "config/train/self6d_target_cpu.yaml", "out=out/self6d_target_nogeom", *ABLATION,
                "self6d.loss.geom=0"],
    "lmo_rgb": ["--config", "config/train/self6d_lmo_rgb_cpu.yaml", "out=out/self6d_lmo_rgb"],
}
METRICS = ("ADD(-S)_0.1d", "5cm5deg", "median_rot_deg", "median_trans_cm", "median_depth_err_cm", "n")
START, END = "<!-- bench_self6d:start -->", "<!-- bench_self6d:end -->"


def out_dir(name: str) -> Path:
    return REPO / next(a.split("=", 1)[1] for a in RUNS[name] if a.startswith("out="))


def run(name: str) -> None:
    """Training times are read back from each run's results.json."""
    cmd = [sys.executable, "training/train.py", *RUNS[name]]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def load(name: str) -> dict:
    path = out_dir(name) / "results.json"
    if not path.is_file():
        raise SystemExit(f"bench_self6d: {path} is missing: run without --report first")
    return json.loads(path.read_text())


def pick(scores: dict) -> dict:
    return {k: scores[k] for k in METRICS}


def row(label: str, scores: dict, seconds=None) -> str:
    minutes = f"{seconds / 60:.1f}" if seconds else ""
    return (f"| {label} | {100 * scores['ADD(-S)_0.1d']:.1f} | {100 * scores['5cm5deg']:.1f} | "
            f"{scores['median_rot_deg']:.1f} | {scores['median_trans_cm']:.1f} | {scores['median_depth_err_cm']:.1f} | "
            f"{scores['n']} | {minutes} |")


def transductive_scores() -> dict:
    """Each run's final model scored on the very target images its stage self trained on, without labels
    (their poses are read here for scoring only): whether the self-supervised loss moved those poses
    towards the truth, apart from how that generalises to held-out images."""
    import torch

    from dsc_pose_core.data.roi_crops import crops_path, load_crops
    from dsc_pose_core.models.self6d import model_from_checkpoint as load_self6d
    from dsc_pose_core.training import self6d as S
    from dsc_pose_core.training.cli import parse_config

    torch.set_num_threads(1)
    cfg = parse_config(REPO / "config/train/self6d_target_cpu.yaml").self6d
    d = cfg.data
    data = S.to_tensors(load_crops(crops_path(REPO / d.cache_dir, "target", cfg.obj_id, d.target_images, d.target_seed,
                                              cfg.model.input_size, cfg.model.context)))
    obj = S.load_object(cfg, cfg.loss.model_points)
    checkpoints = {"LB": out_dir("target") / "checkpoints" / "self6d_synthetic.pt",
                   "Self6D": out_dir("target") / "checkpoints" / "self6d_self.pt",
                   "no_mask": out_dir("no_mask") / "checkpoints" / "self6d_self.pt",
                   "no_geom": out_dir("no_geom") / "checkpoints" / "self6d_self.pt"}
    out = {}
    for name, path in checkpoints.items():
        model, _ = load_self6d(path)
        out[name] = pick(S.evaluate(S.Self6dTrainer(cfg, obj, model=model), data))
    return out


def dsc_rows(obj_id: int) -> list[str]:
    """DSC-PoseNet's LM-O val rows for the same object, from docs/results/lmo_dsc.json when it exists."""
    path = REPO / "docs" / "results" / "lmo_dsc.json"
    if not path.is_file():
        return ["", "DSC-PoseNet on the same split and object: docs/results/lmo_dsc.json does not exist yet; its first CPU "
                "run is in the section \"DSC-PoseNet on LM-O val: first CPU run\" above."]
    rows = json.loads(path.read_text()).get("rows", {})
    out = []
    for name, scores in rows.items():
        per_object = scores.get("per_object", {}).get(str(obj_id), scores)
        add = per_object.get("ADD-S_0.1d", per_object.get("ADD(-S)_0.1d"))
        if add is not None:
            out.append(f"| DSC-PoseNet {name} (docs/results/lmo_dsc.json) | {100 * add:.1f} | "
                       f"{100 * per_object.get('5cm5deg', float('nan')):.1f} | | | | | |")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="only collect existing results")
    args = parser.parse_args(argv)
    if not args.report:
        for name in RUNS:
            if not (out_dir(name) / "results.json").is_file():
                run(name)
    target, no_mask, no_geom, lmo = (load(n) for n in RUNS)
    result = {
        "target_domain": {"LB": pick(target["synthetic"]["test"]), "Self6D": pick(target["self"]["test"]),
                          "no_mask": pick(no_mask["self"]["test"]), "no_geom": pick(no_geom["self"]["test"])},
        "target_domain_transductive": transductive_scores(),
        "lmo_val_rgb": {"LB": pick(lmo["init"]["lmo_eval"]), "Self6D_visual_only": pick(lmo["self"]["lmo_eval"])},
        "obj_id": target["obj_id"],
        "commands": {n: "python training/train.py " + " ".join(RUNS[n]) for n in RUNS},
        "train_seconds": {"synthetic": target["synthetic"]["train_seconds"], "self": target["self"]["train_seconds"],
                          "no_mask": no_mask["self"]["train_seconds"], "no_geom": no_geom["self"]["train_seconds"],
                          "lmo_rgb": lmo["self"]["train_seconds"]},
        "machine": cpu_model(), "commit": git_commit(),
    }
    path = REPO / "docs" / "results" / "self6d.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    t = result["train_seconds"]
    head = "| run | ADD(-S) 0.1d % | 5cm 5deg % | median rot err deg | median trans err cm | median depth err cm | n | train min |\n|---|---|---|---|---|---|---|---|"
    section = "\n".join([
        START,
        f"## Self6D (object {result['obj_id']}): target-domain RGB-D and real LM-O RGB",
        "",
        f"Machine: {result['machine']}, 1 torch thread. Commit: {result['commit']}. Command: `python bench/bench_self6d.py`",
        "(runs the four trainings below when their results are missing, then writes docs/results/self6d.json).",
        "",
        "### Target domain (synthetic RGB-D under an appearance shift + depth-sensor model; held-out target images)",
        "Data split: `out/self6d_data/target_obj*_n150_seed2*` (150 held-out target-domain images, never trained on).",
        "",
        head,
        row("Self6D-LB (stage synthetic only)", target["synthetic"]["test"], t["synthetic"]),
        row("Self6D (+ self-supervised on target RGB-D)", target["self"]["test"], t["self"]),
        row("w/o L_mask", no_mask["self"]["test"], t["no_mask"]),
        row("w/o L_geom", no_geom["self"]["test"], t["no_geom"]),
        "",
        "Transductive: the same models scored on the 400 unlabeled target images stage self trained on (their "
        "poses read for scoring only):",
        "",
        head,
        *[row(name, scores) for name, scores in result["target_domain_transductive"].items()],
        "",
        "### Real RGB: LM-O `val` (visual-only self-supervision on `train_real` RGB + pseudo masks, no depth)",
        "",
        head,
        row("Self6D-LB (synthetic only) on LM-O val", lmo["init"]["lmo_eval"]),
        row("Self6D visual-only (eq. 4-8) on LM-O val", lmo["self"]["lmo_eval"], t["lmo_rgb"]),
        *dsc_rows(result["obj_id"]),
        "",
        "Commands:",
        *[f"- {n}: `python training/train.py {' '.join(RUNS[n])}`" for n in RUNS],
        END,
    ])
    write_section(section, START, END)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
