"""Acceptance: the evaluator reproduces the BOP toolkit's scores on LM-O (scene 2, BOP19)."""

from __future__ import annotations

import numpy as np
import pytest

from dsc_pose_core.data import bop_io
from dsc_pose_core.eval.bop import evaluate, evaluate_files, load_eval_data

# the BOP toolkit's values for the MegaPose+CNOS submission (see the data's README)
BOP_AR_MSSD = 0.49411764705882344
BOP_AR_MSPD = 0.6067128027681661


@pytest.fixture(scope="module")
def megapose_report(lmo_root):
    return evaluate_files(lmo_root, lmo_root / "reference" / "cnos-fastsammegapose_lmo-test.csv")


@pytest.fixture(scope="module")
def gt_report(lmo_root):
    return evaluate_files(lmo_root, lmo_root / "reference" / "gt_lmo-test.csv")


def test_megapose_reference_matches_bop_toolkit(megapose_report):
    r = megapose_report
    assert r["AR_MSSD"] == pytest.approx(BOP_AR_MSSD, abs=1e-3)
    assert r["AR_MSPD"] == pytest.approx(BOP_AR_MSPD, abs=1e-3)
    assert r["AR_VSD"] is None
    assert r["counts"]["valid_gt"] == 1445  # every BOP19 target counts, even < 10 % visible
    # classic metrics are proper fractions, strictly between the extremes for this method
    for key in ("ADD-S_0.1d", "5cm5deg", "proj2d_5px"):
        assert 0.0 < r[key] < 1.0
    assert set(r["per_object"]) == {"1", "5", "6", "8", "9", "10", "11", "12"}
    # recall grows with the threshold
    assert np.all(np.diff(r["recalls_mssd"]) >= 0) and np.all(np.diff(r["recalls_mspd"]) >= 0)


def test_ground_truth_submission_scores_one(gt_report):
    r = gt_report
    for key in ("AR_MSSD", "AR_MSPD", "ADD-S_0.1d", "5cm5deg", "proj2d_5px"):
        assert r[key] == pytest.approx(1.0, abs=1e-12), key
    for row in r["per_object"].values():
        assert row["AR_MSSD"] == 1.0 and row["ADD-S_0.1d"] == 1.0


def test_evaluation_is_fast_enough(megapose_report):
    # < 60 s required on a 2-core machine; typically ~4 s
    assert megapose_report["eval_seconds"]["total"] < 60.0


def test_shifted_ground_truth_on_val_split(lmo_root):
    splits = bop_io.load_splits(lmo_root / "splits.json")
    data = load_eval_data(lmo_root, im_ids=splits["val"])
    scene = data.scenes[2]
    targets = {(t.im_id, t.obj_id) for t in data.targets}

    def shifted(dx):
        return [
            bop_io.PoseEstimate(2, im_id, g.obj_id, 1.0, g.R, g.t + np.array([dx, 0.0, 0.0]))
            for im_id, poses in scene.gt.items()
            for g in poses
            if (im_id, g.obj_id) in targets
        ]

    near = evaluate(data, shifted(0.03))  # 3 cm: within 5 cm 5 deg
    far = evaluate(data, shifted(0.06))  # 6 cm: outside
    assert near["5cm5deg"] == 1.0 and far["5cm5deg"] == 0.0
    assert near["counts"]["images"] == 50
    # MSSD of a pure translation is its length: 3 cm < 0.05 d only for objects with d > 60 cm
    assert near["recalls_mssd"][0] == 0.0 and far["AR_MSSD"] < near["AR_MSSD"]
