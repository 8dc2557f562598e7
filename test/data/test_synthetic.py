"""Synthetic BOP dataset generator: layout, GT consistency, determinism, resume, occlusion, depth noise."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dsc_pose_core.data import bop_io
from dsc_pose_core.data.augment import DepthNoiseConfig, apply_depth_noise, depth_sigma
from dsc_pose_core.data.boxes import mask_box_bop
from dsc_pose_core.data.synthetic import (
    DistractorConfig,
    GenerationReport,
    PoseSamplingConfig,
    SynthConfig,
    SyntheticSceneGenerator,
    generate_dataset,
    read_depth,
    sample_pose,
    scale_intrinsics,
)

W, H = 160, 120


def tiny_config(models: Path, out: Path, **kw) -> SynthConfig:
    K = scale_intrinsics(np.array([[572.4114, 0, 325.2611], [0, 573.57043, 242.04899], [0, 0, 1]]), (640, 480), (W, H))
    base = dict(models_dir=str(models), obj_ids=(1, 2), out_dir=str(out), n_images=4, seed=7, width=W, height=H,
                K=tuple(K.reshape(9)), objects_per_image=2, depth=True, depth_noise=True,
                pose=PoseSamplingConfig(distance=(0.3, 0.6)), distractors=DistractorConfig(0, 1, bank_size=3),
                progress=False)
    base.update(kw)
    return SynthConfig(**base)


def file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "synth_config.json"}


@pytest.fixture(scope="module")
def dataset(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    config = tiny_config(tiny_models, out)
    with SyntheticSceneGenerator(config) as gen:
        report = GenerationReport(out)
        generate_dataset(config, generator=gen, report=report)
        samples = [gen.sample(i) for i in range(config.n_images)]
    return config, out, samples, report


def test_bop_layout_is_complete(dataset):
    config, out, samples, report = dataset
    assert report.rendered == [0, 1, 2, 3] and report.skipped == []
    scene = out / "train_synt" / "000000"
    for name in ("scene_gt.json", "scene_gt_info.json", "scene_camera.json"):
        assert (scene / name).is_file()
    assert json.loads((out / "camera.json").read_text())["width"] == W
    assert sorted(json.loads((out / "models" / "models_info.json").read_text())) == ["1", "2"]
    assert (out / "models" / "obj_000001.ply").is_file() and (out / "models" / "obj_000002.ply").is_file()
    gt = bop_io.load_scene_gt(scene / "scene_gt.json")
    assert sorted(gt) == [0, 1, 2, 3]
    for im_id, poses in gt.items():
        rgb = cv2.imread(str(scene / "rgb" / f"{im_id:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
        depth = cv2.imread(str(scene / "depth" / f"{im_id:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert depth.shape == (H, W) and depth.dtype == np.uint16
        assert len(poses) == config.objects_per_image
        for k in range(len(poses)):
            for sub in ("mask", "mask_visib"):
                m = cv2.imread(str(scene / sub / f"{im_id:06d}_{k:06d}.png"), cv2.IMREAD_UNCHANGED)
                assert m.shape == (H, W) and set(np.unique(m)) <= {0, 255}
    assert not list(out.rglob("*.tmp*")), "temporary files left behind"


def test_written_dataset_reads_back_in_metres(dataset):
    config, out, samples, _ = dataset
    scene = out / "train_synt" / "000000"
    gt = bop_io.load_scene_gt(scene / "scene_gt.json")
    cams = bop_io.load_scene_camera(scene / "scene_camera.json")
    infos = bop_io.load_scene_gt_info(scene / "scene_gt_info.json")
    for im_id, sample in enumerate(samples):
        assert [g.obj_id for g in gt[im_id]] == sample.obj_ids
        for g, R, t in zip(gt[im_id], sample.R, sample.t):
            np.testing.assert_allclose(g.R, R, atol=1e-12)
            np.testing.assert_allclose(g.t, t, atol=1e-12)  # metres after the mm round trip
            assert 0.3 <= g.t[2] <= 0.6
        np.testing.assert_allclose(cams[im_id].K, config.K_matrix)
        assert cams[im_id].depth_scale == config.depth_scale
        assert infos[im_id] == sample.infos
        # the in-memory sample is exactly what was written
        rgb = cv2.cvtColor(cv2.imread(str(scene / "rgb" / f"{im_id:06d}.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(rgb, sample.rgb)
        np.testing.assert_allclose(read_depth(scene / "depth" / f"{im_id:06d}.png", config.depth_scale),
                                   sample.depth, atol=1e-6)


def test_gt_info_matches_masks(dataset):
    _, out, _, _ = dataset
    scene = out / "train_synt" / "000000"
    infos = bop_io.load_scene_gt_info(scene / "scene_gt_info.json")
    depth_scale = bop_io.load_scene_camera(scene / "scene_camera.json")[0].depth_scale
    for im_id, entries in infos.items():
        depth = read_depth(scene / "depth" / f"{im_id:06d}.png", depth_scale)
        for k, info in enumerate(entries):
            visib = cv2.imread(str(scene / "mask_visib" / f"{im_id:06d}_{k:06d}.png"), 0) > 0
            full = cv2.imread(str(scene / "mask" / f"{im_id:06d}_{k:06d}.png"), 0) > 0
            assert not (visib & ~full).any(), "mask_visib must lie inside mask"
            assert info.bbox_visib == mask_box_bop(visib)
            assert info.px_count_visib == visib.sum()
            assert info.px_count_all >= full.sum()  # includes the part outside the image
            assert info.px_count_valid == (full & (depth > 0)).sum()
            assert info.visib_fract == pytest.approx(info.px_count_visib / info.px_count_all)
            assert info.visib_fract >= 0.1
            x, y, w, h = info.bbox_obj
            vx, vy, vw, vh = info.bbox_visib
            assert x <= vx and y <= vy and vx + vw <= x + w and vy + vh <= y + h
            if full.sum() == info.px_count_all:  # not truncated: the box is the mask's
                assert info.bbox_obj == mask_box_bop(full)


def test_same_seed_same_bytes_other_seed_differs(dataset, tiny_models, tmp_path):
    config, out, _, _ = dataset
    again = dataclasses.replace(config, out_dir=str(tmp_path / "again"))
    generate_dataset(again)
    assert file_digests(out) == file_digests(tmp_path / "again")
    other = dataclasses.replace(config, out_dir=str(tmp_path / "other"), seed=8, n_images=1)
    generate_dataset(other)
    a = (out / "train_synt/000000/rgb/000000.png").read_bytes()
    b = (tmp_path / "other/train_synt/000000/rgb/000000.png").read_bytes()
    assert a != b


def test_resume_renders_only_missing_images(dataset, tmp_path):
    config, out, _, _ = dataset
    cfg = dataclasses.replace(config, out_dir=str(tmp_path / "r"))
    generate_dataset(cfg)
    root = tmp_path / "r"
    scene = root / "train_synt" / "000000"
    before = file_digests(root)
    assert before == file_digests(out)
    mtimes = {p: p.stat().st_mtime_ns for p in scene.rglob("*.png")}
    # image 2 half-written: its rgb (written last) and one mask are gone
    (scene / "rgb" / "000002.png").unlink()
    (scene / "mask_visib" / "000002_000001.png").unlink()
    # image 3 finished on disk but lost from scene_gt.json (interrupted before the JSON flush)
    gt = json.loads((scene / "scene_gt.json").read_text())
    del gt["3"]
    (scene / "scene_gt.json").write_text(json.dumps(gt))
    report = GenerationReport(root)
    generate_dataset(cfg, report=report)
    assert report.rendered == [2, 3] and report.skipped == [0, 1]
    assert file_digests(root) == before
    for p, t in mtimes.items():
        if p.name.startswith(("000000", "000001")):
            assert p.stat().st_mtime_ns == t, f"{p} was rewritten"
    # extending the dataset keeps the first images and adds new ones
    report = GenerationReport(root)
    generate_dataset(dataclasses.replace(cfg, n_images=5), report=report)
    assert report.rendered == [4] and report.skipped == [0, 1, 2, 3]
    # other content settings are refused
    with pytest.raises(ValueError, match="other settings"):
        generate_dataset(dataclasses.replace(cfg, seed=1))


def test_multi_object_occlusion(tiny_models, tmp_path):
    cfg = tiny_config(tiny_models, tmp_path, objects_per_image=3, depth=False, depth_noise=False,
                      pose=PoseSamplingConfig(distance=(0.3, 0.7), image_margin=0.35),
                      distractors=DistractorConfig(0, 0), min_visib_fract=0.2)
    occluded = 0
    with SyntheticSceneGenerator(cfg) as gen:
        for i in range(6):
            s = gen.sample(i)
            assert len(s.obj_ids) == 3
            for k in range(3):
                assert not (s.masks_visib[k] & ~s.masks[k]).any()
                assert s.infos[k].visib_fract >= 0.2
                for j in range(k):  # no two objects interpenetrate
                    assert np.linalg.norm(s.t[k] - s.t[j]) >= gen.radius[s.obj_ids[k]] + gen.radius[s.obj_ids[j]]
            occluded += sum(info.visib_fract < 0.999 and (m.sum() == info.px_count_all)
                            for info, m in zip(s.infos, s.masks))
            # visible masks partition the object pixels
            assert (s.masks_visib.sum(0) <= 1).all()
    assert occluded > 0, "no instance was occluded by another one"


def test_depth_noise_model(tiny_models, tmp_path):
    clean_cfg = tiny_config(tiny_models, tmp_path, depth=True, depth_noise=False, distractors=DistractorConfig(0, 0))
    noisy_cfg = dataclasses.replace(clean_cfg, depth_noise=True)
    with SyntheticSceneGenerator(clean_cfg) as gen:
        clean = gen.sample(0)
    with SyntheticSceneGenerator(noisy_cfg) as gen:
        noisy = gen.sample(0)
    np.testing.assert_array_equal(clean.rgb, noisy.rgb)  # noise touches depth only
    np.testing.assert_allclose(clean.depth, clean.depth_clean, atol=clean_cfg.depth_scale / 1000)  # quantised only
    np.testing.assert_array_equal(noisy.depth_clean, clean.depth_clean)
    assert (noisy.depth != clean.depth).any()
    assert ((noisy.depth > 0) & (clean.depth_clean == 0)).sum() == 0  # no depth appears from nothing
    # the model itself on a large step image: sigma grows with depth, edges lose pixels
    rng = np.random.default_rng(0)
    step = np.full((200, 200), 0.5, np.float32)
    step[:, 100:] = 1.5
    out = apply_depth_noise(step, rng)
    for z, sl in ((0.5, np.s_[:, 5:90]), (1.5, np.s_[:, 110:195])):
        region = out[sl][out[sl] > 0]
        assert np.std(region - z) == pytest.approx(depth_sigma(z), rel=0.1)
    missing_edge = (out[:, 98:102] == 0).mean()
    missing_inside = (out[:, 5:90] == 0).mean()
    assert missing_edge > 0.3 and missing_inside < 0.02
    assert (apply_depth_noise(step, np.random.default_rng(1), DepthNoiseConfig(p_edge_drop=0, p_random_drop=0)) > 0).all()


def test_pose_sampling_respects_ranges():
    cfg = PoseSamplingConfig(distance=(0.4, 0.9), elevation_deg=(10, 60), image_margin=0.1)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    rng = np.random.default_rng(3)
    elevations = []
    for _ in range(400):
        R, t = sample_pose(rng, cfg, K, 640, 480)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert 0.4 <= t[2] <= 0.9
        u, v = (K @ t)[:2] / t[2]
        assert 0.1 * 640 - 0.5 <= u <= 0.9 * 640 - 0.5 and 0.1 * 480 - 0.5 <= v <= 0.9 * 480 - 0.5
        c = -R.T @ t  # camera centre in the object frame
        elevations.append(np.degrees(np.arcsin(c[2] / np.linalg.norm(c))))
    assert min(elevations) >= 10 - 1e-6 and max(elevations) <= 60 + 1e-6
    assert max(elevations) - min(elevations) > 40  # the range is covered, not a constant
    # the straight side view keeps object +z pointing up in the image
    R, t = np.eye(3), np.array([0, 0, 1.0])
    from dsc_pose_core.data.synthetic import view_rotation

    R = view_rotation(0.0, 0.0, 0.0, t)
    up_in_cam = R @ np.array([0, 0, 1.0])
    assert up_in_cam[1] == pytest.approx(-1.0)  # image y points down


def test_bop_writers_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    Rs = [np.linalg.qr(rng.standard_normal((3, 3)))[0] for _ in range(3)]
    Rs = [R * np.sign(np.linalg.det(R)) for R in Rs]
    gt = {0: [bop_io.GtPose(1, Rs[0], np.array([0.01, -0.2, 0.9]))],
          12: [bop_io.GtPose(5, Rs[1], np.array([0.1, 0.0, 1.2])), bop_io.GtPose(5, Rs[2], np.array([0.0, 0.3, 0.5]))]}
    bop_io.save_scene_gt(tmp_path / "scene_gt.json", gt)
    raw = json.loads((tmp_path / "scene_gt.json").read_text())
    assert raw["0"][0]["cam_t_m2c"] == pytest.approx([10.0, -200.0, 900.0])  # millimetres on disk
    back = bop_io.load_scene_gt(tmp_path / "scene_gt.json")
    for k in gt:
        for a, b in zip(gt[k], back[k]):
            assert a.obj_id == b.obj_id
            np.testing.assert_allclose(b.R, a.R, atol=1e-15)
            np.testing.assert_allclose(b.t, a.t, atol=1e-15)
    cams = {3: bop_io.CameraInfo(K=np.array([[500.0, 0, 320.5], [0, 501, 240], [0, 0, 1]]), depth_scale=0.1,
                                 R_w2c=Rs[0], t_w2c=np.array([0.0, 0.1, 0.2]))}
    bop_io.save_scene_camera(tmp_path / "scene_camera.json", cams)
    c = bop_io.load_scene_camera(tmp_path / "scene_camera.json")[3]
    np.testing.assert_allclose(c.K, cams[3].K)
    np.testing.assert_allclose(c.t_w2c, [0.0, 0.1, 0.2], atol=1e-15)
    assert c.depth_scale == 0.1
    info = {0: [bop_io.GtInfo((1, 2, 3, 4), (2, 3, 1, 1), 100, 90, 50, 0.5)]}
    bop_io.save_scene_gt_info(tmp_path / "scene_gt_info.json", info)
    assert bop_io.load_scene_gt_info(tmp_path / "scene_gt_info.json") == info
    cam = bop_io.DatasetCamera(K=cams[3].K, width=640, height=480, depth_scale=0.1)
    bop_io.save_camera_json(tmp_path / "camera.json", cam)
    back_cam = bop_io.load_camera_json(tmp_path / "camera.json")
    np.testing.assert_allclose(back_cam.K, cam.K)
    assert (back_cam.width, back_cam.height, back_cam.depth_scale) == (640, 480, 0.1)


def test_clustered_placement_packs_objects_around_one_centre(tiny_models, tmp_path):
    """``cluster_radius`` > 0 puts an image's objects next to each other (real clutter): they lie
    far closer together than when scattered, and they occlude each other more often."""
    def spread_and_occlusion(pose):
        cfg = tiny_config(tiny_models, tmp_path, objects_per_image=3, depth=False, depth_noise=False, pose=pose,
                          distractors=DistractorConfig(0, 0), min_visib_fract=0.1)
        spreads, occluded = [], 0
        with SyntheticSceneGenerator(cfg) as gen:
            for i in range(8):
                s = gen.sample(i)
                assert len(s.obj_ids) == 3
                centre = s.t.mean(0)
                spreads.append(np.linalg.norm(s.t - centre, axis=1).max())
                occluded += sum(info.visib_fract < 0.95 for info in s.infos)
                for k in range(3):  # spheres may overlap down to cluster_spacing of their radii, not more
                    for j in range(k):
                        limit = pose.cluster_spacing if pose.cluster_radius > 0 else 1.0
                        radii = gen.radius[s.obj_ids[k]] + gen.radius[s.obj_ids[j]]
                        assert np.linalg.norm(s.t[k] - s.t[j]) >= limit * radii - 1e-9
        return float(np.median(spreads)), occluded

    scattered = spread_and_occlusion(PoseSamplingConfig(distance=(0.3, 0.7)))
    clustered = spread_and_occlusion(PoseSamplingConfig(distance=(0.3, 0.7), cluster_radius=0.05))
    assert clustered[0] < 0.5 * scattered[0]
    assert clustered[1] > scattered[1]
    with pytest.raises(ValueError, match="cluster"):
        PoseSamplingConfig(cluster_radius=-0.1).validate()
