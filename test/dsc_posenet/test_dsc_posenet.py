"""DSC-PoseNet: eq. (3), the dual-scale transform (eq. 6), the losses (eq. 4-14), a short training
run, checkpoints and the estimator. Tiny models and images (CPU, 1 thread)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsc_testlib import tiny_model_config
from dsc_pose_core.data.dsc_views import (RealPoseDataset, SyntheticPoseDataset, ViewAugmentConfig, real_instances,
                                          synthetic_instances)
from dsc_pose_core.geometry import axis_angle_to_matrix, crop_affine, uncrop_pixels
from dsc_pose_core.losses import dsc_posenet as L
from dsc_pose_core.models.dsc_posenet import (DscPoseNet, DscPoseNetEstimator, attention_keypoints, cell_centres,
                                              image_to_view, norm_window, view_matrix, view_to_image)
from dsc_pose_core.models import dsc_posenet as M
from dsc_pose_core.training import dsc_posenet as T


def test_eq3_attention_average_is_exact_for_exact_offsets():
    torch.manual_seed(0)
    centres = cell_centres(8, 8, 4)
    target = torch.rand(3, 9, 2) * 32
    offsets = target.unsqueeze(-1) - centres.t()[None, None]  # dk_nm = k_n - p_m
    for _ in range(3):
        attention = torch.randn(3, 9, 64) * 5
        fg = torch.rand(3, 64)
        keypoints, votes = attention_keypoints(offsets, attention, fg, centres)
        assert torch.allclose(keypoints, target, atol=1e-4)
    # the softmax is restricted to the foreground: a hard O ignores background votes
    fg = torch.zeros(1, 64)
    fg[0, :10] = 1.0
    wrong = offsets[:1].clone()
    wrong[..., 10:] += 100.0
    keypoints, _ = attention_keypoints(wrong, torch.zeros(1, 9, 64), fg, centres)
    assert torch.allclose(keypoints, target[:1], atol=0.1)


def test_network_outputs_and_keypoints_differentiable():
    torch.manual_seed(0)
    model = DscPoseNet(tiny_model_config())
    out = model(torch.randn(2, 3, 64, 64))
    assert out["mask_logits"].shape == (2, 1, 16, 16)
    assert out["offsets"].shape == (2, 9, 2, 256) and out["attention"].shape == (2, 9, 256)
    out["keypoints"].sum().backward()
    assert model.head.weight.grad.abs().sum() > 0


def test_dual_scale_transform_round_trip():
    cfg = tiny_model_config()
    box = np.array([40.3, 20.1, 90.7, 55.2])
    window = norm_window(cfg, box)
    M = torch.as_tensor(view_matrix(window, cfg.norm_size), dtype=torch.float64)[None]
    assert torch.allclose(M[0], crop_affine(torch.as_tensor(window), cfg.norm_size, cfg.norm_size))
    k = torch.rand(1, 9, 2, dtype=torch.float64) * 100
    view = image_to_view(k, M)  # N(k)
    assert torch.allclose(view_to_image(view, M), k, atol=1e-9)  # N^-1(N(k)) = k (eq. 6)
    assert torch.allclose(uncrop_pixels(view, torch.as_tensor(window)[None], cfg.norm_size, cfg.norm_size), k,
                          atol=1e-9)
    # the normalised crop maps the box onto the same D_N-sized square for every object size
    assert abs((view[..., 0].new_tensor(window[2] - window[0]) * M[0, 0, 0]).item() - cfg.norm_size) < 1e-9


def test_losses_normalised_by_object_scale():
    pred, target = torch.rand(2, 9, 2) * 50, torch.rand(2, 9, 2) * 50
    scale = torch.tensor([40.0, 70.0])
    small = L.keypoint_loss(pred, target, scale)
    assert torch.allclose(small, L.keypoint_loss(pred * 3, target * 3, scale * 3), atol=1e-5)
    assert L.keypoint_loss(target, target, scale) == 0
    votes = pred.unsqueeze(-1).expand(2, 9, 2, 5)
    fg = torch.ones(2, 5)
    assert torch.allclose(L.offset_loss(votes, target, scale, fg), L.offset_loss(votes * 2, target * 2, scale * 2, fg),
                          atol=1e-5)


def _pose():
    R = axis_angle_to_matrix(torch.tensor([[0.3, -0.4, 0.2]]))
    return R, torch.tensor([[0.01, -0.005, 0.3]])


def test_dice_zero_for_identical_masks_and_gradient_reaches_pose(tiny_dsc_data):
    from dsc_pose_core.objects.mesh import load_mesh
    from dsc_pose_core.render.differentiable import DifferentiableRenderer

    mask = torch.zeros(2, 16, 16)
    mask[:, 4:10, 3:12] = 1
    assert L.visible_silhouette_dice(mask, torch.ones_like(mask), mask).abs() < 1e-6
    assert L.visible_silhouette_dice(mask, torch.zeros_like(mask), mask) > 0.9
    renderer = DifferentiableRenderer(30, 0.25)
    renderer.add_object(0, load_mesh(tiny_dsc_data["models"] / "obj_000001.ply"), target_faces=200)
    K = torch.tensor([[120.0, 0, 31.5], [0, 120.0, 31.5], [0, 0, 1]])
    R, t = _pose()
    with torch.no_grad():
        target = (renderer.silhouette(K, 0, R, t, 64, 64) > 0.5).float()
    t_off = (t + torch.tensor([[0.01, 0.0, 0.0]])).requires_grad_(True)
    loss = L.visible_silhouette_dice(renderer.silhouette(K, 0, R, t_off, 64, 64), torch.ones(1, 64, 64), target)
    loss.backward()
    assert loss > 0.05 and torch.isfinite(t_off.grad).all()
    assert t_off.grad[0, 0] > 0  # moving back towards the target lowers the loss


def test_dual_scale_target_is_a_projection_of_the_model(tiny_dsc_data):
    kp3d = torch.tensor(np.random.default_rng(0).normal(0, 0.03, (9, 3)), dtype=torch.float32)
    R, t = _pose()
    K = torch.tensor([[[300.0, 0, 64], [0, 300.0, 48], [0, 0, 1]]])
    gt = L.project_points(kp3d[None] @ R.transpose(1, 2) + t[:, None], K)
    noisy_u, noisy_n = gt + torch.randn_like(gt), gt - torch.randn_like(gt)
    target, valid = L.dual_scale_target(noisy_u, noisy_n, kp3d[None], K)
    assert valid.all() and (target - gt).norm(dim=-1).mean() < (0.5 * (noisy_u + noisy_n) - gt).norm(dim=-1).mean() + 0.5
    k = noisy_u.clone().requires_grad_(True)
    target_g, _ = L.dual_scale_target(k, noisy_n, kp3d[None], K, stop_gradient=False)
    target_g.sum().backward()
    assert torch.isfinite(k.grad).all() and k.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def trainer_and_data(tiny_dsc_data):
    torch.manual_seed(0)
    cfg = T.DscPoseNetConfig(models_dir=str(tiny_dsc_data["models"]), obj_id=1, model=tiny_model_config())
    mesh, kp = T.load_object(cfg)
    syn = SyntheticPoseDataset(synthetic_instances(tiny_dsc_data["synth"], 1), kp, cfg.model, None)
    real = RealPoseDataset(real_instances(tiny_dsc_data["real"], 0, list(range(6)), 1, tiny_dsc_data["pseudo"]),
                           kp, cfg.model, ViewAugmentConfig(), 64, seed=0)
    return cfg, mesh, kp, syn, real


def _batch(dataset, n):
    return torch.utils.data.default_collate([dataset[i] for i in range(n)])


def test_short_training_lowers_every_loss(trainer_and_data):
    cfg, mesh, kp, syn, real = trainer_and_data
    assert len(syn) >= 4 and len(real) >= 3
    trainer = T.DscPoseNetTrainer(cfg, kp, mesh)
    syn_batch, real_batch = _batch(syn, 4), _batch(real, 3)
    model = trainer.model
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = last = None
    for step in range(12):  # LB on one synthetic batch: warm-up (offsets) then key + off + mask
        terms = trainer.synthetic_losses(syn_batch, offsets_only=step < 3)
        first = first or {k: float(v.detach()) for k, v in terms.items()}
        optimiser.zero_grad()
        trainer.total(terms).backward()
        optimiser.step()
    with torch.no_grad():
        last = {k: float(v) for k, v in trainer.synthetic_losses(syn_batch).items()}
    for key in ("off", "mask"):
        assert last[key] < first[key], (key, first, last)
    assert "key" in last
    # self: the real terms go down on a fixed real batch
    with torch.no_grad():
        start = {k: float(v) for k, v in trainer.real_losses(real_batch).items()}
    for _ in range(6):
        terms = trainer.real_losses(real_batch)
        optimiser.zero_grad()
        (cfg.loss.lambda_1 * terms["dual"] + cfg.loss.lambda_2 * terms["align"]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimiser.step()
    with torch.no_grad():
        end = {k: float(v) for k, v in trainer.real_losses(real_batch).items()}
    print("LB", first, last, "Self", start, end)
    assert end["dual"] < start["dual"] and end["align"] < start["align"], (start, end)


def test_key_loss_decreases_after_warmup(trainer_and_data):
    cfg, mesh, kp, syn, _ = trainer_and_data
    torch.manual_seed(1)
    trainer = T.DscPoseNetTrainer(cfg, kp)
    batch = _batch(syn, 4)
    optimiser = torch.optim.Adam(trainer.model.parameters(), lr=2e-3)
    values = []
    for _ in range(8):
        terms = trainer.synthetic_losses(batch)
        values.append(float(terms["key"].detach()))
        optimiser.zero_grad()
        trainer.total(terms).backward()
        optimiser.step()
    assert min(values[-3:]) < values[0], values


def test_run_stages_checkpoint_round_trip_and_estimator(tiny_dsc_data, tmp_path):
    import yaml

    from dsc_pose_core.geometry import solve_pnp
    from dsc_pose_core.typed_config import from_dict, to_dict

    mc = to_dict(tiny_model_config())
    # "{obj_id}" in synthetic.dir names the object's own render set (generate=False: it must resolve)
    (tmp_path / "synth_obj1").symlink_to(tiny_dsc_data["synth"], target_is_directory=True)
    raw = {"models_dir": str(tiny_dsc_data["models"]), "obj_id": 1, "model": mc,
           "synthetic": {"dir": str(tmp_path / "synth_obj{obj_id}"), "generate": False, "min_px": 16, "n_images": 6},
           "real": {"dataset": str(tiny_dsc_data["real"]), "scene_id": 0, "pseudo_dir": str(tiny_dsc_data["pseudo"])},
           "loss": {"align_faces": 200},
           "lb": {"steps": 2, "batch_size": 2, "warmup_steps": 1},
           "self_stage": {"steps": 1, "batch_size": 2, "real_batch_size": 2}}
    cfg = from_dict(T.DscPoseNetConfig, raw)

    class Top:  # what training/cli.py passes
        dsc_posenet = cfg
        seed, threads, device, out = 0, 1, "cpu", str(tmp_path / "run")

    results = T.run_dsc_posenet(Top())
    assert set(results["stages"]) == {"lb", "self"} and results["n_real"] > 0
    path = tmp_path / "run" / "checkpoints" / "dsc_last.pt"
    payload = torch.load(path, weights_only=True)
    assert payload["method"] == M.METHOD and payload["resume"]["stage"] == "self"
    model, checkpoint = M.model_from_checkpoint(path)
    kp3d = checkpoint.inference["keypoints_3d"].numpy()
    assert kp3d.shape == (9, 3) and checkpoint.obj_ids == [1]
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    reloaded, _ = M.model_from_checkpoint(path)
    assert torch.equal(model(x)["keypoints"], reloaded.eval()(x)["keypoints"])

    from dsc_pose_core.data.dsc_views import read_rgb
    inst = synthetic_instances(tiny_dsc_data["synth"], 1)[0]
    estimator = DscPoseNetEstimator(model, kp3d)
    est = estimator.estimate(read_rgb(inst.image_path), inst.K, inst.box_xywh)
    assert est.keypoints.shape == (9, 2) and est.keypoints_norm.shape == (9, 2)
    assert np.allclose(est.keypoints, 0.5 * (est.keypoints_unnorm + est.keypoints_norm))
    assert est.R.shape == (3, 3) and est.t.shape == (3,) and 0.0 <= est.confidence <= 1.0
    if est.success:
        assert abs(np.linalg.det(est.R) - 1) < 1e-6
    # single-scale ablation: that scale's keypoints alone go to PnP; the views themselves are unchanged
    for scales, own in (("unnorm", est.keypoints_unnorm), ("norm", est.keypoints_norm)):
        single = DscPoseNetEstimator(model, kp3d, keypoint_scales=scales).estimate(
            read_rgb(inst.image_path), inst.K, inst.box_xywh)
        assert np.allclose(single.keypoints, own) and np.allclose(single.keypoints_norm, est.keypoints_norm)
        assert np.allclose(solve_pnp(kp3d, own, inst.K).translation, single.t)
    with pytest.raises(ValueError, match="keypoint_scales"):
        DscPoseNetEstimator(model, kp3d, keypoint_scales="both_scales")
    # PnP from keypoints placed at the ground-truth projections recovers the pose
    from dsc_pose_core.geometry.camera import project_posed
    k2d = project_posed(kp3d, inst.K, inst.R, inst.t)[0]
    result = solve_pnp(kp3d, k2d, inst.K)
    assert np.allclose(result.translation, inst.t, atol=1e-4) and np.allclose(result.rotation, inst.R, atol=1e-4)


@pytest.mark.parametrize("name", ["lmo_dsc_cpu.yaml", "lmo_dsc_gpu.yaml"])
def test_configs_parse(repo_root, name):
    from dsc_pose_core.training.cli import parse_config

    config = parse_config(repo_root / "config" / "train" / name)
    assert config.stage == "dsc_posenet" and config.dsc_posenet.stages == ["lb", "self"]
    assert config.dsc_posenet.model.n_keypoints == 9


def test_config_rejects_unknown_mode(repo_root):
    from dsc_pose_core.training.cli import parse_config
    from dsc_pose_core.typed_config import ConfigError

    with pytest.raises(ConfigError):
        parse_config(repo_root / "config" / "train" / "lmo_dsc_cpu.yaml", ["dsc_posenet.real.mode=gt"])
