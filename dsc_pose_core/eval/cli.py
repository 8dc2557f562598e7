"""``dsc-pose-eval``: score a BOP19 results CSV against a BOP dataset.

Example::

    dsc-pose-eval --dataset ../shared/data/lmo \\
        --results ../shared/data/lmo/reference/cnos-fastsammegapose_lmo-test.csv --json out.json

Prints a per-object table and the summary; ``--json`` writes the full report (keys ``AR_MSSD``,
``AR_MSPD``, ``AR_VSD`` (null without depth), ``ADD-S_0.1d``, ``5cm5deg``, ``proj2d_5px``,
``per_object``, ...). Missing or malformed inputs give one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..data import bop_io
from ..objects.mesh import MeshLoadError
from .bop import BOP19_VISIB_GT_MIN, evaluate_files

PROG = "dsc-pose-eval"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Score 6D pose estimates (BOP19 CSV) with the BOP19 protocol "
        "(AR_MSSD, AR_MSPD) and classic metrics (ADD(-S) 0.1d, 5cm5deg, Proj2D 5px).",
    )
    p.add_argument("--dataset", required=True, help="BOP dataset directory (e.g. .../lmo)")
    p.add_argument("--results", required=True, help="results CSV in BOP19 format (t in mm)")
    p.add_argument(
        "--targets",
        default=None,
        help="targets JSON (default: DATASET/test_targets_bop19.json if present, "
        "else every GT instance at least 10%% visible)",
    )
    p.add_argument(
        "--split",
        default=None,
        help="restrict to the image ids listed under this name in DATASET/splits.json (e.g. val)",
    )
    p.add_argument(
        "--models-dir",
        default=None,
        help="meshes + models_info.json (default: DATASET/models_eval, else DATASET/models)",
    )
    p.add_argument("--json", default=None, help="write the full report to this JSON file")
    p.add_argument(
        "--visib-gt-min",
        type=float,
        default=BOP19_VISIB_GT_MIN,
        help="-1 (BOP19 default): the inst_count most visible GT per target are valid; "
        ">= 0: GT at least this visible are valid",
    )
    return p


def format_table(report: dict) -> str:
    cols = ("AR_MSSD", "AR_MSPD", "ADD-S_0.1d", "5cm5deg", "proj2d_5px")
    lines = [f"{'obj':>5} {'n_gt':>5} {'sym':>4} " + " ".join(f"{c:>11}" for c in cols)]
    for obj_id, row in sorted(report["per_object"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"{obj_id:>5} {row['n_gt']:>5} {('yes' if row['symmetric'] else 'no'):>4} "
            + " ".join(f"{row[c]:>11.4f}" for c in cols)
        )
    lines.append(
        f"{'all':>5} {report['counts']['valid_gt']:>5} {'':>4} "
        + " ".join(f"{report[c]:>11.4f}" for c in cols)
    )
    vsd = report["AR_VSD"]
    lines.append(
        f"AR_MSSD={report['AR_MSSD']:.6f}  AR_MSPD={report['AR_MSPD']:.6f}  "
        f"AR_VSD={'null' if vsd is None else f'{vsd:.6f}'}  "
        f"(estimates read {report['counts']['estimates_read']}, evaluated "
        f"{report['counts']['estimates_evaluated']}, valid GT {report['counts']['valid_gt']}, "
        f"images {report['counts']['images']})"
    )
    lines.append(
        "ADD-S_0.1d / 5cm5deg / proj2d_5px in the last row are means over objects; "
        "AR values are pooled over instances (BOP)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for path, what in ((args.dataset, "dataset directory"),):
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{what} not found: {path}")
        if not os.path.isfile(args.results):
            raise FileNotFoundError(f"results file not found: {args.results}")
        if args.targets is not None and not os.path.isfile(args.targets):
            raise FileNotFoundError(f"targets file not found: {args.targets}")
        if args.models_dir is not None and not os.path.isdir(args.models_dir):
            raise FileNotFoundError(f"models directory not found: {args.models_dir}")
        im_ids = None
        if args.split is not None:
            splits_path = os.path.join(args.dataset, "splits.json")
            if not os.path.isfile(splits_path):
                raise FileNotFoundError(f"--split given but {splits_path} does not exist")
            splits = bop_io.load_splits(splits_path)
            if args.split not in splits:
                raise ValueError(
                    f"split {args.split!r} not in {splits_path} (has: {', '.join(sorted(splits))})"
                )
            im_ids = splits[args.split]
        report = evaluate_files(
            args.dataset,
            args.results,
            targets_path=args.targets,
            models_dir=args.models_dir,
            im_ids=im_ids,
            visib_gt_min=args.visib_gt_min,
        )
        report["split"] = args.split
        if args.json:
            parent = os.path.dirname(os.path.abspath(args.json))
            os.makedirs(parent, exist_ok=True)
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=2)
    except (OSError, ValueError, MeshLoadError) as exc:  # BopFormatError is a ValueError
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json:
        print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
