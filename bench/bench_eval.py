"""Benchmark: time the BOP19 evaluator on the LM-O reference submission and record it.

Scores ``reference/cnos-fastsammegapose_lmo-test.csv`` (LM-O test scene 2, all 200 frames,
BOP19 targets, ``models_eval/``) three times, takes the median wall time of the whole
``evaluate_files`` call (loading data + meshes + errors + matching), and writes/updates the
``bench_eval`` section of ``docs/BENCHMARKS.md``.

Usage: ``python bench/bench_eval.py [--dataset DIR] [--runs 3] [--no-write]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsc_pose_core.data.bop_io import default_lmo_dir  # noqa: E402
from dsc_pose_core.eval.bop import evaluate_files  # noqa: E402
from benchlib import cpu_model, git_commit, write_section  # noqa: E402

START = "<!-- bench_eval:start -->"
END = "<!-- bench_eval:end -->"
RESULTS = "reference/cnos-fastsammegapose_lmo-test.csv"




def render(dataset: Path, runs: list[float], report: dict) -> str:
    cores = os.cpu_count()
    rel = os.path.relpath(dataset, REPO)
    return "\n".join(
        [
            START,
            "## Evaluator (`bench/bench_eval.py`)",
            "",
            f"- Machine: {cpu_model()}, {cores} cores (CPU only), Python {platform.python_version()}",
            f"- Command: `python bench/bench_eval.py` (times `evaluate_files` = `dsc-pose-eval "
            f"--dataset {rel} --results {rel}/{RESULTS}`)",
            "- Data: LM-O test scene 2, all 200 frames, BOP19 targets (`test_targets_bop19.json`, "
            "1445 targets), `models_eval/` meshes; split: test (not restricted to val)",
            f"- Commit: {git_commit()}",
            f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            "",
            "| metric | value |",
            "|---|---|",
            f"| AR_MSSD | {report['AR_MSSD']:.6f} (BOP toolkit: 0.494118) |",
            f"| AR_MSPD | {report['AR_MSPD']:.6f} (BOP toolkit: 0.606713) |",
            f"| AR_VSD | {'n/a (no depth)' if report['AR_VSD'] is None else report['AR_VSD']} |",
            f"| ADD(-S) 0.1d (mean over objects) | {report['ADD-S_0.1d']:.4f} |",
            f"| 5cm 5deg (mean over objects) | {report['5cm5deg']:.4f} |",
            f"| Proj2D 5px (mean over objects) | {report['proj2d_5px']:.4f} |",
            f"| estimates read / evaluated | {report['counts']['estimates_read']} / "
            f"{report['counts']['estimates_evaluated']} |",
            f"| wall time, median of {len(runs)} | {statistics.median(runs):.2f} s "
            f"(runs: {', '.join(f'{r:.2f}' for r in runs)}) |",
            END,
        ]
    )



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=str(default_lmo_dir()))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-write", action="store_true", help="print only, do not touch docs/")
    args = p.parse_args(argv)
    dataset = Path(args.dataset)
    results = dataset / RESULTS
    if not results.is_file():
        print(f"bench_eval: error: {results} not found", file=sys.stderr)
        return 2
    runs, report = [], None
    for _ in range(args.runs):
        t0 = time.perf_counter()
        report = evaluate_files(dataset, results)
        runs.append(time.perf_counter() - t0)
    section = render(dataset, runs, report)
    print(section)
    if not args.no_write:
        write_section(section, START, END, REPO / "docs" / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
