"""Test-time alignment (dsc_pose_core.align and the pipeline's "align" refiner).

Convergence is checked on rendered crops with known poses (LM-O meshes, the silhouette as the mask
probability): perturbed starts must end closer in rotation and depth. The pipeline test runs the
committed segmentation checkpoint on a real LM-O val frame.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dsc_pose_core.align import (AMBIENT, AlignConfig, align, colour_agreement, confidence, contour,
                                 hypothesis_rotations, observe, score_pose)
from dsc_pose_core.eval.metrics import rotation_error_deg
from dsc_pose_core.objects.registry import ObjectRegistry
from dsc_pose_core.pipeline import PipelineConfig, PipelineConfigError, PoseEstimator, refiner_order
from dsc_pose_core.render import FastRenderer

REPO = Path(__file__).resolve().parents[2]
SEG = REPO / "checkpoints" / "segmentation" / "lmo_seg.pt"
S = 128


@pytest.fixture(scope="module")
def lmo_registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


@pytest.fixture(scope="module")
def renderer(lmo_registry):
    r = FastRenderer(S, S)
    for o in (5, 8):
        r.add_object(o, lmo_registry[o].mesh.decimated(1000))
    yield r
    r.close()


def _rotation(axis, degrees):
    import cv2

    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return cv2.Rodrigues(axis * math.radians(degrees))[0]


def _scene(renderer, registry, obj_id, R, t):
    """A 128 px crop (identity window) of the object at (R, t) on a grey background, and its silhouette."""
    K = np.array([[500.0, 0, 63.5], [0, 500.0, 63.5], [0, 0, 1]])
    out = renderer.render_batch(K, obj_id, R[None], t[None], S, S, rgb=True, light=AMBIENT)
    mask = out.instance[0] > 0
    image = np.where(mask[..., None], out.rgb[0], 110).astype(np.uint8)
    return K, image, mask.astype(np.float32)


def test_hypothesis_sets_are_proper_rotations():
    for kind, n in (("none", 1), ("flips", 4), ("cube24", 24)):
        G = hypothesis_rotations(kind)
        assert len(G) == n
        assert np.allclose(G[0], np.eye(3))
        assert np.allclose(np.linalg.det(G), 1.0)
        assert np.allclose(G @ np.transpose(G, (0, 2, 1)), np.eye(3), atol=1e-9)
        flat = G.reshape(n, 9).round(6)
        assert len({tuple(v) for v in flat}) == n
    with pytest.raises(ValueError):
        hypothesis_rotations("all")


def test_contour_is_the_outline():
    m = np.zeros((1, 8, 8), bool)
    m[0, 2:6, 2:6] = True
    c = contour(m)[0]
    assert c.sum() == 12 and not c[3:5, 3:5].any() and c[2, 2:6].all()


def test_config_validation():
    with pytest.raises(ValueError):
        AlignConfig(hypotheses="many").validate()
    with pytest.raises(ValueError):
        AlignConfig(step_px=0).validate()
    AlignConfig().validate()


@pytest.mark.parametrize("obj_id,seed", [(8, 0), (8, 1), (5, 2)])
def test_alignment_converges_from_perturbed_starts(renderer, lmo_registry, obj_id, seed):
    rng = np.random.default_rng(seed)
    diameter = lmo_registry[obj_id].diameter
    R_gt = _rotation(rng.normal(size=3), rng.uniform(0, 180)) @ _rotation([1, 0, 0], 180)
    t_gt = np.array([0.0, 0.0, 500 * diameter / 80])
    K, image, mask = _scene(renderer, lmo_registry, obj_id, R_gt, t_gt)
    window = np.array([-0.5, -0.5, S - 0.5, S - 0.5])
    config = AlignConfig()
    obs = observe(image, K, mask, window, config)
    R0 = _rotation(rng.normal(size=3), 12.0) @ R_gt
    t0 = t_gt * 1.08 + np.array([0.006, -0.004, 0.0])
    R, t, energy, info = align(renderer, obj_id, R0, t0, obs, config)
    rot0, rot1 = rotation_error_deg(R0, R_gt), rotation_error_deg(R, R_gt)
    depth0, depth1 = abs(t0[2] / t_gt[2] - 1), abs(t[2] / t_gt[2] - 1)
    assert rot1 < 0.6 * rot0, (rot0, rot1)
    assert depth1 < 0.02 and depth1 < 0.3 * depth0, (depth0, depth1)
    assert np.linalg.norm(t[:2] - t_gt[:2]) < np.linalg.norm(t0[:2] - t_gt[:2])
    assert info["renders"] > 12 and energy < 0.15
    # the confidence prefers the aligned pose to the perturbed start, and the right colours to grey ones
    assert score_pose(renderer, obj_id, R, t, obs, config) > score_pose(renderer, obj_id, R0, t0, obs, config)
    grey = renderer.render_batch(K, obj_id, R[None], t[None], S, S, rgb=True, light=AMBIENT)
    m = grey.instance > 0
    assert colour_agreement(grey.rgb, m, obs)[0] > colour_agreement(np.full_like(grey.rgb, 128), m, obs)[0]
    assert 0.0 < confidence(energy, 1.0, config) < confidence(energy, 1.0, config, symmetric=True) < 1.0


def test_an_extra_start_near_the_truth_wins_over_a_far_start(renderer, lmo_registry):
    """``align(extra=)`` (the aligner's "templates" hypotheses): a start 100 deg off and a second one 10 deg off
    compete; the colour term's energy picks the near one, and a start behind the camera is dropped."""
    rng = np.random.default_rng(4)
    diameter = lmo_registry[8].diameter
    R_gt = _rotation(rng.normal(size=3), 70.0)
    t_gt = np.array([0.0, 0.0, 500 * diameter / 80])
    K, image, mask = _scene(renderer, lmo_registry, 8, R_gt, t_gt)
    config = AlignConfig(w_colour=1.0, keep=2)
    obs = observe(image, K, mask, np.array([-0.5, -0.5, S - 0.5, S - 0.5]), config)
    far = _rotation(rng.normal(size=3), 100.0) @ R_gt
    near = _rotation(rng.normal(size=3), 10.0) @ R_gt
    R, t, _, info = align(renderer, 8, far, t_gt * 1.05, obs, config,
                          extra=[(near, t_gt * 0.95), (near, -t_gt)])
    assert info["hypothesis"] == 1, info
    assert rotation_error_deg(R, R_gt) < 8.0
    _, _, _, without = align(renderer, 8, far, t_gt * 1.05, obs, config, extra=[(near, t_gt * 0.95)])
    assert info["renders"] == without["renders"]  # the start behind the camera was never rendered
    R_alone, *_ = align(renderer, 8, far, t_gt * 1.05, obs, config)
    assert rotation_error_deg(R_alone, R_gt) > 30.0


def test_align_refuses_a_start_behind_the_camera(renderer, lmo_registry):
    K, image, mask = _scene(renderer, lmo_registry, 8, np.eye(3), np.array([0, 0, 1.0]))
    obs = observe(image, K, mask, np.array([-0.5, -0.5, S - 0.5, S - 0.5]), AlignConfig())
    with pytest.raises(ValueError):
        align(renderer, 8, np.eye(3), np.array([0, 0, -1.0]), obs, AlignConfig())


def test_refiner_order():
    assert refiner_order("off", 0) == [] and refiner_order("off", 2) == ["deepim"]
    assert refiner_order("before", 2) == ["align", "deepim"] and refiner_order("after", 2) == ["deepim", "align"]
    assert refiner_order("before", 0) == ["align"]
    with pytest.raises(PipelineConfigError):
        refiner_order("sometimes", 0)


def test_pipeline_refiner_errors(lmo_registry):
    with pytest.raises(PipelineConfigError, match="segmentation checkpoint"):
        PoseEstimator(lmo_registry, PipelineConfig(init="box", refiners=["align"], obj_ids=[8]))
    with pytest.raises(PipelineConfigError, match="at most once"):
        PoseEstimator(lmo_registry, PipelineConfig(init="box", refiners=["align", "align"], obj_ids=[8],
                                                   segmentation_checkpoint=SEG))
    with pytest.raises(PipelineConfigError, match="refine_iterations"):
        PoseEstimator(lmo_registry, PipelineConfig(init="box", refiners=["deepim"], refine_iterations=0, obj_ids=[8]))
    with pytest.raises(PipelineConfigError, match="not found"):
        PoseEstimator(lmo_registry, PipelineConfig(init="box", refiners=["align"], obj_ids=[8],
                                                   segmentation_checkpoint=REPO / "missing.pt"))


def test_box_plus_align_on_a_real_val_frame(lmo_registry):
    """The training-free CPU pipeline (box initialiser + alignment with the committed mask network)
    moves the depth of LM-O val objects towards the truth and scores its poses in (0, 1)."""
    from dsc_pose_core.data.bop_io import default_lmo_dir, find_rgb, load_splits, read_rgb, select_scene_images
    from dsc_pose_core.predict_cli import gt_detections

    assert SEG.is_file(), f"missing {SEG}"
    lmo = default_lmo_dir()
    im_id = load_splits(lmo / "splits.json")["val"][0]
    scene = select_scene_images(lmo, 2, "test", None, [im_id])
    image = read_rgb(find_rgb(scene.scene_path, im_id))
    dets = gt_detections(scene.gt, scene.gt_info, 2, im_id, image.shape[1], image.shape[0], 0)
    K = scene.cameras[im_id].K
    truth = {g.obj_id: g for g in scene.gt[im_id]}
    with PoseEstimator(lmo_registry, PipelineConfig(init="box", refiners=["align"], segmentation_checkpoint=SEG,
                                                    refine_iterations=0)) as estimator:
        results = estimator.estimate(image, K, dets)
    assert all(r.ok and r.refined for r in results)
    before = np.median([abs(r.init_t[2] / truth[r.obj_id].t[2] - 1) for r in results])
    after = np.median([abs(r.t[2] / truth[r.obj_id].t[2] - 1) for r in results])
    assert after < 0.6 * before, (before, after)
    scores = np.array([r.score for r in results])
    assert ((scores > 0) & (scores < 1)).all() and scores.std() > 0


def test_edge_band_keeps_only_edges_near_the_mask_outline():
    image = np.full((64, 64, 3), 100, np.uint8)
    image[20:44, 20:44] = 220  # the object
    image[2:6, 50:62] = 0  # clutter far from it
    mask = np.zeros((64, 64), np.float32)
    mask[20:44, 20:44] = 1.0
    K = np.array([[100.0, 0, 31.5], [0, 100.0, 31.5], [0, 0, 1]])
    window = np.array([-0.5, -0.5, 63.5, 63.5])
    plain = observe(image, K, mask, window, AlignConfig(edge_band=0.0))
    banded = observe(image, K, mask, window, AlignConfig(edge_band=4.0))
    assert plain.edge_distance[1:7, 52:60].min() == 0.0 and banded.edge_distance[1:7, 52:60].min() == AlignConfig().edge_tau
    assert banded.edge_distance[20, 30] <= 1.0 and plain.edge_distance[20, 30] <= 1.0
    assert np.allclose(plain.K, K) and plain.size == 64
