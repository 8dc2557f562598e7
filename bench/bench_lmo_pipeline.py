"""Whole pipelines on LM-O `val`: initialisers with and without test-time alignment and DeepIM (issue 26).

One command: runs `dsc-pose-predict` (its typed API, ``predict_cli.PredictJob``) on the val split for the
rows below, scores each CSV with the package's BOP evaluator, and writes `docs/results/lmo_pipeline.json`,
the "Pipelines on LM-O val" section of docs/BENCHMARKS.md and docs/images/lmo_confidence.svg (accuracy of
the poses kept against the fraction kept, ordered by the pose confidence).

    python bench/bench_lmo_pipeline.py [--rows box,box+align,dsc,dsc+align,dsc+deepim2,dsc+align+deepim2,...]
    python bench/bench_lmo_pipeline.py --markdown-only   # the BENCHMARKS section again from the JSON

Rows: ``box`` / ``dsc`` / ``templates`` initialiser (``templates``: rendered templates matched in pretrained
features, banks kept in ``defaults.TEMPLATE_CACHE``; building them is start-up, not per-image time); ``+align``: the aligner (``dsc_pose_core.align``, masks of
``checkpoints/segmentation/lmo_seg.pt``); ``+align_templates``: the aligner with template
matching's pose as a second hypothesis (``--align-hypotheses templates``); ``+colour``: the aligner's vertex-colour term at weight 1 (``--align-colour 1``); ``+deepim2``: two DeepIM iterations (``checkpoints/deepim.pt``),
after the aligner when both run. Time per object: the pipeline's wall time on an image divided by its
detections (initialiser, refiners and confidence; no image decoding), p50 / p90 over images, one torch
thread. ``confidence_auroc``: over every val estimate of the ``dsc+align`` row (``box+align`` when that row
is not run), how well the pose's ``score`` ranks ADD(-S)-correct poses (< 0.1 d) above wrong ones. Also the
time per frame (all of an LM-O frame's 5-8 detections), whether 3 objects fit 10 Hz, the default pipeline
(``dsc_pose_core/defaults.py``) marked, and docs/images/lmo_pipelines.svg: ADD(-S) against the time per frame.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dsc_pose_core.data.bop_io import default_lmo_dir, load_splits, read_bop_results
from dsc_pose_core.eval.bop import evaluate_files, load_eval_data
from dsc_pose_core.eval.metrics import add_or_add_s
from dsc_pose_core.predict_cli import PredictJob, run as predict

from benchlib import cpu_model, git_commit, write_section

REPO = Path(__file__).resolve().parents[1]
ROWS = ("box", "box+align", "dsc", "dsc+align", "dsc+deepim2", "dsc+align+deepim2", "templates", "templates+align",
        "templates+align+colour", "dsc+align_templates+colour")
BEGIN, END = "<!-- bench_lmo_pipeline:start -->", "<!-- bench_lmo_pipeline:end -->"
METRICS = ("ADD-S_0.1d", "AR_MSPD", "AR_MSSD")


def job(row: str, out: Path) -> PredictJob:
    parts = row.split("+")
    refine = int(parts[-1].removeprefix("deepim")) if parts[-1].startswith("deepim") else 0
    return PredictJob(dataset=str(default_lmo_dir()), scene=2, split="val", out=str(out), init=parts[0],
                      refine=refine, align="before" if {"align", "align_templates"} & set(parts) else "off",
                      align_hypotheses="templates" if "align_templates" in parts else "none",
                      align_colour=1.0 if "colour" in parts else 0.0, threads=1, quiet=True)


def correctness(estimates, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, ADD(-S) < 0.1 d, relative depth errors) of every estimate of an object shown in its image
    (LM-O shows each object once per image, so (image, object) names the instance)."""
    scene = data.scenes[2]
    scores, correct, depth = [], [], []
    for e in estimates:
        gt = next((g for g in scene.gt.get(e.im_id, []) if g.obj_id == e.obj_id), None)
        if gt is None:
            continue
        obj = data.objects[e.obj_id]
        err = add_or_add_s(e.R, np.ravel(e.t), gt.R, np.ravel(gt.t), obj.points, obj.symmetric)
        scores.append(e.score)
        correct.append(err < 0.1 * obj.diameter)
        depth.append(abs(float(np.ravel(e.t)[2]) / float(np.ravel(gt.t)[2]) - 1.0))
    return np.array(scores), np.array(correct, bool), np.array(depth)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Probability that a correct pose scores above a wrong one (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def kept_curve(scores: np.ndarray, positive: np.ndarray, points: int = 20) -> list[tuple[float, float]]:
    """[(fraction kept, ADD(-S) accuracy of the kept poses)], the most confident poses kept first."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(positive[order])
    out = []
    for k in np.unique(np.linspace(1, len(order), points).round().astype(int)):
        out.append((float(k / len(order)), float(hits[k - 1] / k)))
    return out


def svg_curve(curves: dict, path: Path) -> None:
    """A small SVG line plot: accuracy of the kept poses against the fraction kept."""
    w, h, m = 420, 300, 45
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]

    def xy(f, a):
        return m + f * (w - 2 * m), h - m - a * (h - 2 * m)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             'font-size="11">', f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">fraction of poses kept (most confident first)</text>',
             f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">'
             'ADD(-S) accuracy of the kept poses</text>']
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = xy(v, 0)
        parts.append(f'<text x="{x}" y="{h - m + 14}" text-anchor="middle">{v:g}</text>')
        x, y = xy(0, v)
        parts.append(f'<text x="{m - 6}" y="{y + 4}" text-anchor="end">{v:g}</text>')
    for i, (name, curve) in enumerate(curves.items()):
        points = " ".join("%.1f,%.1f" % xy(f, a) for f, a in curve)
        colour = colours[i % len(colours)]
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{w - m - 5}" y="{m + 14 * i}" text-anchor="end" fill="{colour}">{name}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def svg_tradeoff(rows: dict, default: str, path: Path) -> None:
    """ADD(-S) against the latency per frame (log scale), one labelled point per pipeline, the 10 Hz line."""
    w, h, m = 620, 300, 50  # room right of the slowest point for its label
    lo, hi = 1.0, max(2000.0, max(r["ms_per_frame_p50"] for r in rows.values()) * 1.2)
    top = max(0.25, max(r["ADD-S_0.1d"] for r in rows.values()) * 1.2)

    def xy(ms, acc):
        x = m + (np.log10(max(ms, lo)) - np.log10(lo)) / (np.log10(hi) - np.log10(lo)) * (w - 2 * m - 110)
        return x, h - m - acc / top * (h - 2 * m)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             'font-size="11">', f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="black"/>',
             f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="black"/>',
             f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">pipeline time per LM-O frame (ms, log)</text>',
             f'<text x="12" y="{h / 2}" transform="rotate(-90 12 {h / 2})" text-anchor="middle">ADD(-S) 0.1 d on val</text>']
    for ms in (1, 10, 100, 1000, 10000):
        if ms <= hi:
            x, _ = xy(ms, 0)
            parts.append(f'<text x="{x:.1f}" y="{h - m + 14}" text-anchor="middle">{ms}</text>')
    x10, _ = xy(100, 0)
    parts.append(f'<line x1="{x10:.1f}" y1="{m}" x2="{x10:.1f}" y2="{h - m}" stroke="#999" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{x10 + 3:.1f}" y="{m + 10}" fill="#666">10 Hz</text>')
    for v in np.linspace(0, top, 5):
        _, y = xy(lo, v)
        parts.append(f'<text x="{m - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for name, r in rows.items():
        x, y = xy(r["ms_per_frame_p50"], r["ADD-S_0.1d"])
        colour = "#d62728" if name == default else "#1f77b4"
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>')
        parts.append(f'<text x="{x + 6:.1f}" y="{y - 4:.1f}" fill="{colour}">{name}{" (default)" if name == default else ""}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")


def run_row(row: str, workdir: Path, val_ids: list[int], data) -> tuple[dict, tuple]:
    csv = workdir / f"{row.replace('+', '_')}.csv"
    summary = predict(job(row, csv))
    report = evaluate_files(default_lmo_dir(), csv, im_ids=val_ids)
    estimates = read_bop_results(csv)
    per_image: dict[int, list] = {}
    for e in estimates:
        per_image.setdefault(e.im_id, []).append(e.time)
    ms = [1000 * times[0] / len(times) for times in per_image.values()]
    frame_ms = [1000 * times[0] for times in per_image.values()]  # an LM-O frame's objects (5-8), one pass
    scores, correct, depth = correctness(estimates, data)
    out = {m: report[m] for m in METRICS}
    out.update({"median_depth_err": float(np.median(depth)), "ms_per_object_p50": float(np.median(ms)),
                "ms_per_object_p90": float(np.percentile(ms, 90)), "ms_per_frame_p50": float(np.median(frame_ms)),
                "ms_per_frame_p90": float(np.percentile(frame_ms, 90)), "estimates": len(estimates),
                "seconds": summary["seconds"],
                "per_object_ADD-S_0.1d": {k: v["ADD-S_0.1d"] for k, v in report["per_object"].items()}})
    print(f"{row}: " + ", ".join(f"{k} {out[k]:.3f}" for k in (*METRICS, "median_depth_err", "ms_per_object_p50")),
          flush=True)
    return out, (scores, correct)


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [BEGIN, "## Pipelines on LM-O val: test-time alignment (`bench/bench_lmo_pipeline.py`)", "",
             f"- Machine: {result['machine']}; command: `{result['command']}`; commit {result['commit']}",
             f"- Data: LM-O scene 2, split `val` ({result['n_images']} images), detections = GT visible boxes "
             "loosened U(0, 15 %) per side (seed 0); checkpoints of the repository (`checkpoints/`)", "",
             "| pipeline | ADD(-S) 0.1d | AR_MSPD | AR_MSSD | median depth err. | ms / object p50 | p90 | "
             "ms / frame p50 (5-8 objects) | 3 objects at 10 Hz | confidence AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        mark = " (default)" if name == result.get("default_row") else ""
        lines.append(f"| {name}{mark} | {r['ADD-S_0.1d']:.3f} | {r['AR_MSPD']:.3f} | {r['AR_MSSD']:.3f} | "
                     f"{100 * r['median_depth_err']:.1f} % | {r['ms_per_object_p50']:.0f} | "
                     f"{r['ms_per_object_p90']:.0f} | {r.get('ms_per_frame_p50', float('nan')):.0f} | "
                     f"{'yes' if 3 * r['ms_per_object_p50'] <= 100 else 'no'} | "
                     f"{'-' if r.get('confidence_auroc') is None else format(r['confidence_auroc'], '.3f')} |")
    auc = result.get("confidence_auroc")
    lines += ["", f"- Confidence AUROC ({result.get('confidence_row')}, ADD(-S) correct vs not, every val "
              f"estimate): {'n/a' if auc is None else f'{auc:.3f}'}; accuracy of the kept poses against the "
              "fraction kept: ![confidence](images/lmo_confidence.svg)",
              "- ADD(-S) and AR are the BOP evaluator's (objects' means); median depth error = |z / z_gt - 1|; "
              "time per object = the pipeline's time on an image / its detections; per frame = the pipeline's time "
              "on an image with all its detections (5-8 LM-O objects), 1 torch thread; 3 objects at 10 Hz: "
              "3 x the time per object <= 100 ms (the issue's \"a few objects at 10 Hz\").",
              "- Accuracy against latency per frame (pick another pipeline by its place here): "
              "![accuracy vs latency](images/lmo_pipelines.svg); the default (`dsc_pose_core/defaults.py`) is marked.",
              END]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {ROWS}")
    parser.add_argument("--markdown-only", action="store_true",
                        help="rewrite the BENCHMARKS section from docs/results/lmo_pipeline.json (no run)")
    parser.add_argument("--json", help="write here instead of docs/results/lmo_pipeline.json and leave "
                                       "docs/BENCHMARKS.md and the plot alone")
    args = parser.parse_args()
    if args.markdown_only:
        write_section(markdown(json.loads((REPO / "docs" / "results" / "lmo_pipeline.json").read_text())), BEGIN, END)
        return 0
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {ROWS}")
    lmo = default_lmo_dir()
    val_ids = load_splits(lmo / "splits.json")["val"]
    data = load_eval_data(lmo, im_ids=val_ids)
    from dsc_pose_core import defaults

    default = defaults.INIT + ("+align" if defaults.ALIGN != "off" else "") + (
        f"+deepim{defaults.REFINE_ITERATIONS}" if defaults.REFINE_ITERATIONS else "")
    result = {"split": "val", "n_images": len(val_ids), "commit": git_commit(), "default_row": default,
              "machine": f"{cpu_model()}, {os.cpu_count()} cores, no GPU",
              "command": "python bench/bench_lmo_pipeline.py " + " ".join(sys.argv[1:]), "rows": {}}
    scored = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            result["rows"][row], scored[row] = run_row(row, Path(tmp), val_ids, data)
    which = next((r for r in ("dsc+align", "box+align", *[r for r in scored if "align" in r]) if r in scored), None)
    if which is not None:
        result["confidence_row"] = which
        result["confidence_auroc"] = auroc(*scored[which])
        result["kept_curve"] = {r: kept_curve(*scored[r]) for r in scored if "align" in r}
        for r in scored:  # every aligned row's confidence (the aligner's score), not only the headline one
            if "align" in r:
                result["rows"][r]["confidence_auroc"] = auroc(*scored[r])
    result["seconds"] = time.perf_counter() - start
    print(f"confidence AUROC ({which}): {result.get('confidence_auroc')}")
    out = Path(args.json) if args.json else REPO / "docs" / "results" / "lmo_pipeline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if not args.json:
        write_section(markdown(result), BEGIN, END)
        if "kept_curve" in result:
            svg_curve(result["kept_curve"], REPO / "docs" / "images" / "lmo_confidence.svg")
        svg_tradeoff(result["rows"], default, REPO / "docs" / "images" / "lmo_pipelines.svg")
    else:
        print(markdown(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
