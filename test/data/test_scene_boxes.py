"""2D boxes of real training images (data/scene_boxes.py): the boxes-only layout, the BOP fallback,
splits with and without splits.json, and one clear error per bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsc_pose_core.data import bop_io
from dsc_pose_core.data.scene_boxes import (BOXES_FILE, load_scene_boxes, measurable_ground_truth,
                                            split_image_ids)


def _bop_scene(scene):
    scene.mkdir(parents=True)
    R = np.eye(3)
    bop_io.save_scene_gt(scene / "scene_gt.json", {3: [bop_io.GtPose(7, R, np.array([0, 0, 0.5])),
                                                      bop_io.GtPose(2, R, np.array([0, 0, 0.6]))]})
    infos = [bop_io.GtInfo(bbox_obj=(0, 0, 9, 9), bbox_visib=(10, 20, 30, 40), px_count_all=1, px_count_valid=1,
                           px_count_visib=1, visib_fract=1.0),
             bop_io.GtInfo(bbox_obj=(0, 0, 9, 9), bbox_visib=(1, 2, 3, 4), px_count_all=1, px_count_valid=1,
                           px_count_visib=1, visib_fract=1.0)]
    bop_io.save_scene_gt_info(scene / "scene_gt_info.json", {3: infos})


def test_boxes_file_is_read_and_wins_over_bop_ground_truth(tmp_path):
    scene = tmp_path / "test" / "000000"
    _bop_scene(scene)
    from_bop = load_scene_boxes(scene)
    assert [(b.obj_id, b.bbox_visib) for b in from_bop[3]] == [(7, (10, 20, 30, 40)), (2, (1, 2, 3, 4))]
    assert measurable_ground_truth(scene) is None
    (scene / BOXES_FILE).write_text(json.dumps({"5": [{"obj_id": 4, "bbox_visib": [1.6, 2, 50, 60.4]}], "9": []}))
    boxes = load_scene_boxes(scene)
    assert sorted(boxes) == [5, 9] and boxes[9] == []
    assert (boxes[5][0].obj_id, boxes[5][0].bbox_visib) == (4, (2, 2, 50, 60))
    assert "scene_boxes.json" in measurable_ground_truth(scene)  # instances are not scene_gt's


@pytest.mark.parametrize("content, message", [
    ('[1, 2]', "expected {image id"),
    ('{"a": []}', "image ids must be integers"),
    ('{"0": [{"obj_id": 1}]}', "needs obj_id and bbox_visib"),
    ('{"0": [{"obj_id": 1, "bbox_visib": [1, 2, 3]}]}', "must be 4 numbers"),
    ('{"0": [{"obj_id": 1, "bbox_visib": [1, 2, 0, 5]}]}', "width and height must be > 0"),
    ('{"0": ', "cannot read boxes"),
])
def test_bad_boxes_file_is_one_clear_error(tmp_path, content, message):
    (tmp_path / BOXES_FILE).write_text(content)
    with pytest.raises(bop_io.BopFormatError, match=message):
        load_scene_boxes(tmp_path)


def test_a_scene_without_boxes_says_what_to_write(tmp_path):
    with pytest.raises(bop_io.BopFormatError, match="write scene_boxes.json"):
        load_scene_boxes(tmp_path)
    assert "scene_gt.json does not exist" in measurable_ground_truth(tmp_path)


def test_splits_with_and_without_a_splits_file(tmp_path):
    scene = tmp_path / "test" / "000000"
    scene.mkdir(parents=True)
    (scene / BOXES_FILE).write_text(json.dumps({"4": [], "1": [], "2": []}))
    assert split_image_ids(tmp_path, "", "train_real", scene) == [1, 2, 4]  # no splits: every image trains
    assert split_image_ids(tmp_path, "", "val", scene, required=False) is None  # ... and nothing validates
    with pytest.raises(FileNotFoundError, match='splits_file: ""'):
        split_image_ids(tmp_path, "splits.json", "train_real", scene)
    (tmp_path / "splits.json").write_text(json.dumps({"train_real": [2, 4], "val": [1]}))
    assert split_image_ids(tmp_path, "splits.json", "train_real", scene) == [2, 4]
    assert split_image_ids(tmp_path, "splits.json", "val", scene) == [1]
    assert split_image_ids(tmp_path, "splits.json", "test", scene, required=False) is None
    with pytest.raises(ValueError, match="split 'test' not in"):
        split_image_ids(tmp_path, "splits.json", "test", scene)
