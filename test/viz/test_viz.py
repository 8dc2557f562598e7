"""Pose pictures: drawing primitives and ``dsc-pose-viz`` on LM-O val images and on a synthetic scene."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from dsc_pose_core.viz import EST_COLOR, GT_COLOR, box_edges, draw_box3d, draw_contour
from dsc_pose_core.viz.cli import main as viz_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from synth_testlib import make_models_dir  # noqa: E402  (tiny primitive models, test/data)

K = np.array([[500.0, 0, 160], [0, 500, 120], [0, 0, 1]])


def colour_mask(image_rgb: np.ndarray, color, tol: int = 40) -> np.ndarray:
    return (np.abs(image_rgb.astype(int) - np.asarray(color)).max(axis=2) <= tol)


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"{path} not written"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_box_edges_and_drawing():
    edges = box_edges()
    assert len(edges) == 12 and all(bin(i ^ j).count("1") == 1 for i, j in edges)
    corners = np.array([[x, y, z] for x in (-0.05, 0.05) for y in (-0.05, 0.05) for z in (-0.05, 0.05)])
    image = np.zeros((240, 320, 3), np.uint8)
    assert draw_box3d(image, K, np.eye(3), np.array([0, 0, 0.5]), corners, GT_COLOR)
    hits = colour_mask(image, GT_COLOR, tol=5)
    ys, xs = np.nonzero(hits)
    # the near face spans 160 +- 500 * 0.05 / 0.45 px
    assert abs(xs.min() - (160 - 500 * 0.05 / 0.45)) <= 2 and abs(xs.max() - (160 + 500 * 0.05 / 0.45)) <= 2
    assert not draw_box3d(image.copy(), K, np.eye(3), np.array([0, 0, -0.5]), corners)  # behind the camera
    mask = np.zeros((240, 320), bool)
    mask[50:100, 60:200] = True
    canvas = np.zeros_like(image)
    assert draw_contour(canvas, mask, EST_COLOR, thickness=1) == 1
    on = canvas.max(axis=2) > 60  # anti-aliased line on black
    assert on[50, 60:200].all() and on[99, 60:200].all() and not on[70:80, 100:150].any()
    # a silhouette cut by the image border: the border is not an object edge and is not drawn
    mask[:, :] = False
    mask[100:160, 250:] = True
    canvas[:] = 0
    draw_contour(canvas, mask, EST_COLOR, thickness=1)
    on = canvas.max(axis=2) > 60
    assert on[100, 252:318].all() and on[159, 252:318].all() and on[110:150, 250].all()
    assert not on[105:155, 319].any()


def _boxes(lmo_root: Path, im_id: int, key: str, min_visib: float = 0.0):
    info = json.loads((lmo_root / "test/000002/scene_gt_info.json").read_text())[str(im_id)]
    return [np.array(i[key]) for i in info if i["visib_fract"] >= min_visib]


def test_viz_cli_draws_gt_on_lmo_val_objects(lmo_root, tmp_path):
    im_id = 615  # a val frame
    out = tmp_path / "gt"
    rc = viz_main(["--dataset", str(lmo_root), "--split-name", "val", "--im-ids", str(im_id), "--out", str(out)])
    assert rc == 0
    boxed = read_rgb(out / f"000002_{im_id:06d}.png")
    rc = viz_main(["--dataset", str(lmo_root), "--split-name", "val", "--im-ids", str(im_id), "--no-box",
                   "--out", str(tmp_path / "contours")])
    assert rc == 0
    image = read_rgb(tmp_path / "contours" / f"000002_{im_id:06d}.png")
    green = colour_mask(image, GT_COLOR)
    green[:70, :200] = False  # the legend
    assert colour_mask(boxed, GT_COLOR).sum() > green.sum()  # the 3D boxes add lines
    # every well visible object has GT drawing inside its visible box
    for x, y, w, h in _boxes(lmo_root, im_id, "bbox_visib", min_visib=0.3):
        assert green[y:y + h + 1, x:x + w + 1].sum() > 50
    # and the contours stay on the objects: nearly all of them lie inside the objects' silhouette boxes
    inside = np.zeros_like(green)
    for x, y, w, h in _boxes(lmo_root, im_id, "bbox_obj"):
        inside[max(0, y - 4):y + h + 5, max(0, x - 4):x + w + 5] = True
    assert (green & inside).sum() > 0.99 * green.sum()


def test_viz_cli_draws_results_csv(lmo_root, tmp_path):
    im_id = 625
    out = tmp_path / "est"
    rc = viz_main(["--dataset", str(lmo_root), "--results", str(lmo_root / "reference/gt_lmo-test.csv"),
                   "--split-name", "val", "--im-ids", f"{im_id},3", "--no-gt", "--masks", "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [f"000002_{im_id:06d}.png"]  # 3 is not a val image
    image = read_rgb(out / f"000002_{im_id:06d}.png")
    magenta = colour_mask(image, EST_COLOR)
    magenta[:70, :200] = False
    assert not colour_mask(image, GT_COLOR)[70:].any() or colour_mask(image, GT_COLOR)[70:].sum() < 50
    for x, y, w, h in _boxes(lmo_root, im_id, "bbox_visib", min_visib=0.3):
        assert magenta[y:y + h + 1, x:x + w + 1].sum() > 50


def test_viz_on_synthetic_scene_follows_masks(tmp_path):
    from dsc_pose_core.data.augment import AugmentConfig
    from dsc_pose_core.data.synthetic import DistractorConfig, PoseSamplingConfig, SynthConfig, generate_dataset

    models = make_models_dir(tmp_path / "models")
    cfg = SynthConfig(models_dir=str(models), obj_ids=(1, 2), out_dir=str(tmp_path / "ds"), n_images=2, seed=1,
                      width=320, height=240, K=tuple(K.reshape(9)), objects_per_image=2,
                      pose=PoseSamplingConfig(distance=(0.3, 0.5)), distractors=DistractorConfig(0, 0),
                      augment=AugmentConfig.off(), edge_blend=False, progress=False)
    generate_dataset(cfg)
    scene = tmp_path / "ds" / "train_synt" / "000000"
    rc = viz_main(["--scene-dir", str(scene), "--models", str(tmp_path / "ds" / "models"), "--no-box",
                   "--no-labels", "--thickness", "1", "--out", str(tmp_path / "viz")])
    assert rc == 0
    for im_id in (0, 1):
        image = read_rgb(tmp_path / "viz" / f"000000_{im_id:06d}.png")
        drawn = np.abs(image.astype(int) - read_rgb(scene / "rgb" / f"{im_id:06d}.png")).max(axis=2) > 40
        boundary = np.zeros(drawn.shape, bool)  # each full silhouette's outline (also where occluded)
        kernel = np.ones((5, 5), np.uint8)
        for k in range(2):
            full = (cv2.imread(str(scene / "mask" / f"{im_id:06d}_{k:06d}.png"), 0) > 0).astype(np.uint8)
            boundary |= cv2.dilate(full, kernel) > cv2.erode(full, kernel)
        assert drawn.sum() > 50 and (drawn & boundary).sum() > 0.98 * drawn.sum()


def test_viz_cli_reports_bad_input(tmp_path, capsys):
    assert viz_main(["--scene-dir", str(tmp_path / "nope"), "--models", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "dsc-pose-viz: error" in capsys.readouterr().err
