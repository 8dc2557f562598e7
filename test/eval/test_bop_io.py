"""BOP file IO: unit conversion at the edge, CSV round trip, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dsc_pose_core.data import bop_io
from dsc_pose_core.data.bop_io import BopFormatError, PoseEstimate


def make_estimates(n=5):
    out = []
    for i in range(n):
        R = Rotation.random(random_state=i).as_matrix()
        t = np.array([0.01 * i, -0.02, 0.9 + 0.001 * i])
        out.append(PoseEstimate(2, 3 + i, [1, 5, 10][i % 3], 1.0 / (i + 1), R, t, 0.25))
    return out


def test_csv_round_trip(tmp_path):
    ests = make_estimates()
    path = tmp_path / "sub" / "res.csv"
    bop_io.write_bop_results(path, ests)
    back = bop_io.read_bop_results(path)
    assert len(back) == len(ests)
    for a, b in zip(ests, back):
        assert (a.scene_id, a.im_id, a.obj_id) == (b.scene_id, b.im_id, b.obj_id)
        assert a.score == b.score and a.time == b.time
        np.testing.assert_allclose(b.R, a.R, rtol=0, atol=1e-15)
        np.testing.assert_allclose(b.t, a.t, rtol=1e-14, atol=0)


def test_results_csv_is_in_millimetres(tmp_path):
    est = PoseEstimate(2, 3, 1, 0.9, np.eye(3), np.array([0.0, 0.05, 1.2]), -1.0)
    path = tmp_path / "res.csv"
    bop_io.write_bop_results(path, [est])
    lines = path.read_text().splitlines()
    assert lines[0] == "scene_id,im_id,obj_id,score,R,t,time"
    t_field = lines[1].split(",")[5].split()
    assert [float(v) for v in t_field] == pytest.approx([0.0, 50.0, 1200.0])  # 5 cm == 50 mm
    # and reading a hand-written BOP row gives metres
    path.write_text("scene_id,im_id,obj_id,score,R,t,time\n2,3,1,0.5,1 0 0 0 1 0 0 0 1,10 -50 1000,0.1\n")
    (e,) = bop_io.read_bop_results(path)
    np.testing.assert_allclose(e.t, [0.01, -0.05, 1.0])
    assert e.time == pytest.approx(0.1)


def test_scene_gt_and_camera_are_converted_to_metres(tmp_path):
    (tmp_path / "scene_gt.json").write_text(
        json.dumps({"7": [{"obj_id": 5, "cam_R_m2c": [1, 0, 0, 0, 1, 0, 0, 0, 1], "cam_t_m2c": [50, 0, 900]}]})
    )
    (tmp_path / "scene_camera.json").write_text(
        json.dumps({"7": {"cam_K": [500, 0, 320, 0, 500, 240, 0, 0, 1], "depth_scale": 0.1,
                          "cam_R_w2c": [1, 0, 0, 0, 1, 0, 0, 0, 1], "cam_t_w2c": [0, 0, 50]}})
    )
    (tmp_path / "scene_gt_info.json").write_text(
        json.dumps({"7": [{"bbox_obj": [1, 2, 3, 4], "bbox_visib": [1, 2, 3, 3], "px_count_all": 12,
                           "px_count_valid": 12, "px_count_visib": 9, "visib_fract": 0.75}]})
    )
    gt = bop_io.load_scene_gt(tmp_path / "scene_gt.json")
    assert list(gt) == [7] and gt[7][0].obj_id == 5
    np.testing.assert_allclose(gt[7][0].t, [0.05, 0.0, 0.9])  # 50 mm == 5 cm
    cam = bop_io.load_scene_camera(tmp_path / "scene_camera.json")
    assert cam[7].K[0, 0] == 500 and cam[7].K[1, 2] == 240 and cam[7].depth_scale == 0.1
    np.testing.assert_allclose(cam[7].t_w2c, [0, 0, 0.05])
    info = bop_io.load_scene_gt_info(tmp_path / "scene_gt_info.json")
    assert info[7][0].bbox_visib == (1, 2, 3, 3) and info[7][0].px_count_visib == 9
    assert info[7][0].visib_fract == 0.75


@pytest.mark.parametrize(
    "row, message",
    [
        ("2,3,1,0.5,1 0 0 0 1 0 0 0 1,10 -50", "expected 7"),
        ("2,3,1,0.5,1 0 0 0 1 0 0 0,10 -50 1000,0.1", "R has 8 numbers"),
        ("2,x,1,0.5,1 0 0 0 1 0 0 0 1,10 -50 1000,0.1", "must be integers"),
        ("2,3,1,0.5,1 0 0 0 1 0 0 0 1,10 abc 1000,0.1", "t is not numeric"),
        ("2,3,1,nan,1 0 0 0 1 0 0 0 1,10 0 1000,0.1", "score is not finite"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    good = "2,3,1,0.5,1 0 0 0 1 0 0 0 1,10 -50 1000,0.1"
    path.write_text(f"scene_id,im_id,obj_id,score,R,t,time\n{good}\n{row}\n")
    with pytest.raises(BopFormatError) as info:
        bop_io.read_bop_results(path)
    text = str(info.value)
    assert f"{path}:3" in text and message in text


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        bop_io.read_bop_results(tmp_path / "none.csv")
    with pytest.raises(FileNotFoundError, match="not found"):
        bop_io.load_scene_gt(tmp_path / "none.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(BopFormatError, match="broken.json"):
        bop_io.load_targets(tmp_path / "broken.json")
    (tmp_path / "gt.json").write_text(json.dumps({"1": [{"obj_id": 1, "cam_R_m2c": [1, 0, 0], "cam_t_m2c": [0, 0, 1]}]}))
    with pytest.raises(BopFormatError, match="cam_R_m2c has 3 numbers"):
        bop_io.load_scene_gt(tmp_path / "gt.json")


def test_reads_the_lmo_scene(lmo_root):
    d = bop_io.scene_dir(lmo_root, 2)
    gt = bop_io.load_scene_gt(d / "scene_gt.json")
    info = bop_io.load_scene_gt_info(d / "scene_gt_info.json")
    cam = bop_io.load_scene_camera(d / "scene_camera.json")
    assert len(gt) == 200 and set(gt) == set(info) == set(cam)
    assert all(len(gt[i]) == len(info[i]) for i in gt)
    t = np.stack([g.t for poses in gt.values() for g in poses])
    assert 0.3 < np.median(t[:, 2]) < 1.6  # metres (LM-O: 346 - 1500 mm)
    assert cam[3].K[0, 0] == pytest.approx(572.4114)
    targets = bop_io.load_targets(lmo_root / "test_targets_bop19.json")
    assert len(targets) == 1445 and {t.inst_count for t in targets} == {1}
    splits = bop_io.load_splits(lmo_root / "splits.json")
    assert len(splits["val"]) == 50
    ref = bop_io.read_bop_results(lmo_root / "reference" / "gt_lmo-test.csv")
    assert len(ref) == 1445
    first = gt[ref[0].im_id][0]
    np.testing.assert_allclose(ref[0].t, first.t, atol=1e-9)
