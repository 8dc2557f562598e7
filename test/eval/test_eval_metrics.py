"""Unit tests of the pose error functions, symmetries and BOP matching rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dsc_pose_core.data.bop_io import GtInfo, GtPose
from dsc_pose_core.eval import metrics
from dsc_pose_core.eval.bop import _valid_gt_mask, greedy_match
from dsc_pose_core.objects.mesh import load_mesh
from dsc_pose_core.objects.models_info import ContinuousSymmetry, ModelInfo, load_models_info
from dsc_pose_core.objects.symmetry import (
    continuous_steps,
    symmetry_transformations,
    symmetry_transformations_array,
)

K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


def random_points(n=500, seed=0):
    return np.random.default_rng(seed).uniform(-0.05, 0.05, size=(n, 3))


def random_pose(seed):
    rng = np.random.default_rng(seed)
    R = Rotation.random(random_state=seed).as_matrix()
    t = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.6, 1.2)])
    return R, t


def test_add_of_identical_pose_is_zero():
    pts = random_points()
    R, t = random_pose(1)
    assert metrics.add(R, t, R, t, pts) == pytest.approx(0.0, abs=1e-12)
    assert metrics.add_s(R, t, R, t, pts) == pytest.approx(0.0, abs=1e-12)
    assert metrics.proj2d(R, t, R, t, K, pts) == pytest.approx(0.0, abs=1e-9)
    assert metrics.mssd(R, t, R, t, pts) == pytest.approx(0.0, abs=1e-12)
    assert metrics.mspd(R, t, R, t, K, pts) == pytest.approx(0.0, abs=1e-9)


def test_add_of_pure_translation_equals_its_length():
    pts = random_points()
    R, t = random_pose(2)
    d = np.array([0.03, -0.04, 0.012])
    assert metrics.add(R, t + d, R, t, pts) == pytest.approx(np.linalg.norm(d), rel=1e-12)
    # MSSD of a pure translation is also |d| (every point moves by d)
    assert metrics.mssd(R, t + d, R, t, pts) == pytest.approx(np.linalg.norm(d), rel=1e-12)
    assert metrics.translation_error(t + d, t) == pytest.approx(np.linalg.norm(d))
    assert metrics.rotation_error_deg(R, R) == pytest.approx(0.0, abs=1e-5)


def test_add_s_never_exceeds_add():
    pts = random_points(800, seed=3)
    for seed in range(10):
        R_e, t_e = random_pose(100 + seed)
        R_g, t_g = random_pose(200 + seed)
        t_e = t_g + (t_e - t_g) * 0.05  # keep them close
        a = metrics.add(R_e, t_e, R_g, t_g, pts)
        s = metrics.add_s(R_e, t_e, R_g, t_g, pts)
        assert s <= a + 1e-12
        assert metrics.add_or_add_s(R_e, t_e, R_g, t_g, pts, symmetric=True) == s
        assert metrics.add_or_add_s(R_e, t_e, R_g, t_g, pts, symmetric=False) == a


def test_rotation_error_and_n_deg_n_cm():
    R_g, t_g = random_pose(4)
    R_z = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    assert metrics.rotation_error_deg(R_g @ R_z, R_g) == pytest.approx(90.0, abs=1e-6)
    R_4 = Rotation.from_euler("x", 4, degrees=True).as_matrix()
    assert metrics.n_deg_n_cm(R_4 @ R_g, t_g + [0.049, 0, 0], R_g, t_g)
    assert not metrics.n_deg_n_cm(R_4 @ R_g, t_g + [0.051, 0, 0], R_g, t_g)
    R_6 = Rotation.from_euler("x", 6, degrees=True).as_matrix()
    assert not metrics.n_deg_n_cm(R_6 @ R_g, t_g, R_g, t_g)


def test_proj2d_of_shift_parallel_to_image_plane():
    pts = random_points()
    R, t = np.eye(3), np.array([0.0, 0.0, 1.0])
    pts_flat = pts.copy()
    pts_flat[:, 2] = 0.0  # all at depth 1 m: a 1 cm x-shift moves every point by fx * 0.01 px
    e = metrics.proj2d(R, t + [0.01, 0, 0], R, t, K, pts_flat)
    assert e == pytest.approx(K[0, 0] * 0.01, rel=1e-9)


def naive_mssd_mspd(R_e, t_e, R_g, t_g, pts, syms, K):
    pe = pts @ R_e.T + t_e
    ue = pe @ K.T
    ue = ue[:, :2] / ue[:, 2:]
    mssd, mspd = math.inf, math.inf
    for R_s, t_s in syms:
        pg = pts @ (R_g @ R_s).T + (R_g @ t_s + t_g)
        ug = pg @ K.T
        ug = ug[:, :2] / ug[:, 2:]
        mssd = min(mssd, max(np.linalg.norm(p - q) for p, q in zip(pe, pg)))
        mspd = min(mspd, max(np.linalg.norm(p - q) for p, q in zip(ue, ug)))
    return mssd, mspd


def test_batched_mssd_mspd_match_a_naive_loop():
    pts = random_points(60, seed=5)
    syms = [(Rotation.random(random_state=s).as_matrix(), np.random.default_rng(s).normal(0, 0.01, 3)) for s in range(4)]
    syms = [(np.eye(3), np.zeros(3))] + syms
    poses_e = [random_pose(300 + i) for i in range(5)]
    poses_g = [random_pose(400 + i) for i in range(5)]
    R_e = np.stack([p[0] for p in poses_e])
    t_e = np.stack([p[1] for p in poses_e])
    R_g = np.stack([p[0] for p in poses_g])
    t_g = np.stack([p[1] for p in poses_g])
    got_s = metrics.mssd_batch(R_e, t_e, R_g, t_g, pts, syms)
    got_p = metrics.mspd_batch(R_e, t_e, R_g, t_g, K, pts, syms)
    for i in range(5):
        want_s, want_p = naive_mssd_mspd(R_e[i], t_e[i], R_g[i], t_g[i], pts, syms, K)
        assert got_s[i] == pytest.approx(want_s, rel=1e-10)
        assert got_p[i] == pytest.approx(want_p, rel=1e-8)


def test_eggbox_symmetry_gives_zero_mssd_but_positive_add(lmo_root):
    infos = load_models_info(lmo_root / "models_eval" / "models_info.json")
    egg = infos[10]
    assert egg.is_symmetric and len(egg.symmetries_discrete) == 1
    pts = load_mesh(lmo_root / "models_eval" / "obj_000010.ply").vertices
    syms = symmetry_transformations(egg)
    assert len(syms) == 2 and np.allclose(syms[0][0], np.eye(3))
    R_s, t_s = syms[1]
    assert np.abs(t_s).max() < 0.01, "symmetry translations must be in metres"
    R_g, t_g = random_pose(7)
    R_e, t_e = R_g @ R_s, R_g @ t_s + t_g  # the GT pose seen through the symmetry
    assert metrics.mssd(R_e, t_e, R_g, t_g, pts, syms) == pytest.approx(0.0, abs=1e-9)
    assert metrics.mspd(R_e, t_e, R_g, t_g, K, pts, syms) == pytest.approx(0.0, abs=1e-6)
    add = metrics.add(R_e, t_e, R_g, t_g, pts)
    assert add > 0.05  # a half-turn of a 16 cm object
    # ADD-S sees (almost) no error: the surface maps onto itself
    assert metrics.add_s(R_e, t_e, R_g, t_g, pts) < 0.1 * add
    # without the symmetry set MSSD is large
    assert metrics.mssd(R_e, t_e, R_g, t_g, pts) > 0.05


def test_continuous_symmetry_discretisation_follows_bop():
    assert continuous_steps(0.01) == 315
    disc = np.eye(4)
    disc[:3, :3] = Rotation.from_euler("x", 180, degrees=True).as_matrix()
    disc[:3, 3] = [0.0, 0.0, 0.02]
    info = ModelInfo(
        obj_id=1,
        diameter=0.1,
        bbox_min=np.zeros(3),
        bbox_size=np.ones(3),
        symmetries_discrete=[disc],
        symmetries_continuous=[ContinuousSymmetry(axis=np.array([0.0, 0.0, 1.0]), offset=np.array([0.01, 0.0, 0.0]))],
    )
    Rs, ts = symmetry_transformations_array(info)
    assert Rs.shape == (2 * 315, 3, 3) and ts.shape == (2 * 315, 3)
    assert np.allclose(Rs[0], np.eye(3)) and np.allclose(ts[0], 0.0)
    # every continuous step keeps the axis point (offset) fixed
    off = np.array([0.01, 0.0, 0.0])
    for R, t in zip(Rs[:315], ts[:315]):
        assert np.allclose(R @ off + t, off)
        assert np.allclose(np.linalg.det(R), 1.0)
    # step angle is 2 pi / 315
    ang = math.degrees(math.acos((np.trace(Rs[1]) - 1) / 2))
    assert ang == pytest.approx(360.0 / 315, rel=1e-9)
    # second block = continuous o discrete
    assert np.allclose(Rs[315], disc[:3, :3]) and np.allclose(ts[315], disc[:3, 3])
    # no symmetry -> identity only
    plain = ModelInfo(obj_id=2, diameter=0.1, bbox_min=np.zeros(3), bbox_size=np.ones(3))
    assert len(symmetry_transformations(plain)) == 1


def test_greedy_match_prefers_lowest_error_and_skips_invalid_gt():
    # two estimates (already sorted by score) vs two GT instances
    errors = np.array([[[0.3], [0.1]], [[0.2], [0.05]]])
    m = greedy_match(errors, [0.25], np.array([True, True]))
    assert list(m) == [1, 0]  # first estimate takes GT 1 (lower error), second takes GT 0
    m = greedy_match(errors, [0.25], np.array([True, False]))
    assert list(m) == [-1, 0]  # GT 1 is not valid: the first estimate fails (0.3 >= 0.25)
    m = greedy_match(errors, [0.1], np.array([True, True]))
    assert list(m) == [-1, 1]  # strict "<" threshold
    # multi-element error: all elements must be below the running best
    rete = np.array([[[4.0, 0.01], [1.0, 0.04]]])
    assert list(greedy_match(rete, [5.0, 0.05], np.array([True, True]))) == [0]


def test_valid_gt_mask_rules():
    gts = [GtPose(1, np.eye(3), np.zeros(3)), GtPose(1, np.eye(3), np.zeros(3)), GtPose(2, np.eye(3), np.zeros(3))]
    infos = [GtInfo((0,) * 4, (0,) * 4, 0, 0, 0, v) for v in (0.05, 0.8, 0.5)]
    # BOP19 (visib_gt_min = -1): the inst_count most visible instances of each target object
    assert list(_valid_gt_mask(gts, infos, {1: 1}, -1.0)) == [False, True, False]
    assert list(_valid_gt_mask(gts, infos, {1: 2, 2: 1}, -1.0)) == [True, True, True]
    # old rule: target object and visib_fract >= visib_gt_min
    assert list(_valid_gt_mask(gts, infos, {1: 2, 2: 1}, 0.1)) == [False, True, True]


def test_scoring_imports_no_torch():
    """The BOP evaluator and its metrics use the numpy half of geometry.camera only (dsc-pose-eval
    starts in ~2 s, not ~5 s with torch)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, dsc_pose_core.eval.bop, dsc_pose_core.eval.cli; "
                          "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
