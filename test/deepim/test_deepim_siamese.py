"""DeepIM on a pretrained siamese encoder (models.deepim.DeepImSiameseNet): the correlation, the identity
start, what is frozen, the trainer's learning rates, checkpoints and the refiner (tiny sizes, CPU)."""

import numpy as np
import pytest
import torch

from dsc_pose_core.deepim.refiner import DeepImRefiner
from dsc_pose_core.deepim.zoom import ZoomConfig
from dsc_pose_core.models.deepim import DeepImSiameseNet, local_correlation, model_from_checkpoint
from dsc_pose_core.training.deepim import (DeepImConfig, DeepImDataConfig, DeepImLossConfig, DeepImModelConfig,
                                           DeepImOptimConfig, DeepImTrainer)
from dsc_pose_core.typed_config import ConfigError


def test_local_correlation_is_the_shifted_dot_product():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 6, 7), torch.randn(2, 5, 6, 7)
    corr = local_correlation(a, b, 2)
    assert corr.shape == (2, 25, 6, 7)
    for dy, dx in ((0, 0), (1, -2), (-2, 2)):
        channel = (dy + 2) * 5 + (dx + 2)
        for y, x in ((3, 3), (0, 0), (5, 6)):
            yy, xx = y + dy, x + dx
            expected = (a[:, :, y, x] * b[:, :, yy, xx]).sum(1) / 5 ** 0.5 if 0 <= yy < 6 and 0 <= xx < 7 else 0.0
            torch.testing.assert_close(corr[:, channel, y, x], torch.as_tensor(expected).expand(2).float())


def test_siamese_network_starts_at_identity_and_trains_only_what_is_not_frozen():
    torch.manual_seed(0)
    net = DeepImSiameseNet(frozen_stages=3, width=32, fc_dim=32)
    x = torch.randn(3, 8, 48, 64) * 0.3
    bn = net.trunk.blocks[4][0].bn1
    stats = bn.running_mean.clone()
    out = net.train()(x)
    assert out["flow"].shape == (3, 2, 48, 64) and out["mask"].shape == (3, 1, 48, 64)
    torch.testing.assert_close(out["rot"], torch.eye(3).expand(3, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["trans"], torch.zeros(3, 3))
    torch.testing.assert_close(bn.running_mean, stats)  # every trunk BatchNorm keeps its ImageNet statistics
    assert not any(p.requires_grad for p in net.trunk.conv_stem.parameters())
    assert not any(p.requires_grad for s in range(3) for p in net.trunk.blocks[s].parameters())
    assert all(p.requires_grad for p in net.trunk.blocks[3].parameters())
    (out["flow"].abs().mean() + out["mask"].mean()).backward()
    assert net.trunk.blocks[3][0].conv_pw.weight.grad.abs().sum() > 0  # matching features learn
    assert net.trunk.blocks[2][0].conv_pw.weight.grad is None
    # one trunk runs once on both crops (observed and rendered, 2B images)
    batches = []
    hook = net.trunk.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    net.eval()(x)
    hook.remove()
    assert batches == [2 * x.shape[0]]
    net.train()
    # swapping the crops changes the fused input
    assert not torch.allclose(net(x, aux=True)["mask"], net(torch.cat([x[:, 3:6], x[:, :3], x[:, 6:]], 1), aux=True)["mask"])


def _tiny_config(small_K, **model):
    return DeepImConfig(
        data=DeepImDataConfig(width=160, height=120, K=list(small_K.ravel()), objects_per_image=1, distractors=0,
                              distance=[0.4, 0.6], observed_box="detection"),
        zoom=ZoomConfig(64, 48), loss=DeepImLossConfig(pose_weight=1.0, n_points=200),
        model=DeepImModelConfig(encoder="efficientnet_lite0", fc_dim=32, head_width=32, **model),
        optim=DeepImOptimConfig(steps=10, batch_size=4, lr=1e-3, lr_drops=[], train_iter=1))


def test_siamese_training_learns_saves_and_refines(small_K, box_mesh, renderer, tmp_path):
    torch.manual_seed(0)
    trainer = DeepImTrainer(_tiny_config(small_K, trunk_lr_scale=0.1), {1: box_mesh}, seed=0)
    try:
        head, trunk = trainer.optimizer.param_groups
        assert head["lr_scale"] == 1.0 and trunk["lr_scale"] == 0.1
        items = trainer.draw_items(4)
        initial = trainer.initial_poses(items)
        before = trainer.train_step(items, train=False, initial=initial, n_iter=1)[0]
        for _ in range(30):
            trainer.train_step(items, initial=initial)
        assert trunk["lr"] == pytest.approx(0.1 * head["lr"])
        after = trainer.train_step(items, train=False, initial=initial, n_iter=1)[0]
        assert after["pose"] < 0.7 * before["pose"], (before, after)
        path = trainer.save(tmp_path / "siamese.pt", {"stage": "deepim"})
        model, checkpoint = model_from_checkpoint(path)
        assert isinstance(model, DeepImSiameseNet) and checkpoint.network["encoder"] == "efficientnet_lite0"
        x = torch.randn(2, 8, 48, 64) * 0.3
        trainer.model.eval()
        torch.testing.assert_close(model(x)["trans"], trainer.model(x)["trans"])
        refiner = DeepImRefiner.from_checkpoint(path, {1: box_mesh})
        try:
            image = np.random.default_rng(0).integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
            result = refiner.refine(image, small_K, [(1, items[0].R_gt, items[0].t_gt)], 2, boxes=[items[0].obs_box])
            assert len(result.history) == 2 and np.isfinite(result.t).all()
            assert not np.allclose(result.t, items[0].t_gt)  # the trained head moves the pose
        finally:
            refiner.renderer.close()
    finally:
        trainer.close()


def test_siamese_settings_are_checked(small_K, box_mesh):
    config = _tiny_config(small_K)
    config.zoom = ZoomConfig(60, 48)
    with pytest.raises(ConfigError, match="multiples of 16"):
        config.validate()
    config = _tiny_config(small_K)
    config.model.encoder = "vgg"
    with pytest.raises(ConfigError, match="encoder must be one of"):
        config.validate()


def test_disentangled_point_matching_keeps_the_rotation_gradient_whatever_the_translation_error():
    import math

    from dsc_pose_core.geometry.rotations import axis_angle_to_matrix, quaternion_to_matrix
    from dsc_pose_core.geometry.untangled import relative_untangled
    from dsc_pose_core.losses.deepim import DeepImLossWeights, deepim_loss

    torch.manual_seed(0)
    points = {1: (torch.rand(500, 3) - 0.5) * torch.tensor([0.1, 0.08, 0.06])}
    B = 16
    R_gt = quaternion_to_matrix(torch.nn.functional.normalize(torch.randn(B, 4), dim=1))
    t_gt = torch.tensor([0.02, -0.01, 0.8]).repeat(B, 1)
    axis = torch.nn.functional.normalize(torch.randn(B, 3), dim=1) * math.radians(15)
    R_src = axis_angle_to_matrix(axis) @ R_gt

    def rotation_gradient(depth_error, disentangled):
        q = torch.tensor([1.0, 0, 0, 0]).repeat(B, 1).requires_grad_(True)
        out = {"rot": quaternion_to_matrix(q), "trans": torch.zeros(B, 3)}
        t_src = t_gt + torch.tensor([0.005, 0.005, depth_error])
        total, terms, _ = deepim_loss(out, R_src, t_src, R_gt, t_gt, [1] * B, points, {},
                                      DeepImLossWeights(1, 0, 0, disentangled, 1.0))
        total.backward()
        assert ("pose_rot" in terms) == disentangled and terms["pose"] > 0
        return q.grad[:, 1:]

    joint_near, joint_far = rotation_gradient(0.0, False), rotation_gradient(0.15, False)
    split_near, split_far = rotation_gradient(0.0, True), rotation_gradient(0.15, True)
    torch.testing.assert_close(split_far, split_near)  # the translation error does not reach the rotation's term
    assert joint_far.norm(dim=1).mean() < 0.7 * joint_near.norm(dim=1).mean()
    # both point the rotation toward the truth (the descent direction undoes the start's rotation)
    assert torch.nn.functional.cosine_similarity(split_far, axis, dim=1).min() > 0.8
    # the exact correction scores zero in both forms
    t_src = t_gt + torch.tensor([0.005, 0.005, 0.15])
    R_delta, v = relative_untangled(R_src, t_src, R_gt, t_gt)
    for disentangled in (False, True):
        total, _, _ = deepim_loss({"rot": R_delta, "trans": v}, R_src, t_src, R_gt, t_gt, [1] * B, points, {},
                                  DeepImLossWeights(1, 0, 0, disentangled, 3.0))
        assert float(total) < 1e-5


def test_training_starts_from_an_init_checkpoint_of_the_same_network(small_K, box_mesh, tmp_path):
    from dsc_pose_core.checkpoint import read_checkpoint
    from dsc_pose_core.training.deepim import run_deepim
    from dsc_pose_core.training.stages import TrainConfig
    from dsc_pose_core.objects.demo_object import write_demo_models, write_demo_registry
    from dsc_pose_core.typed_config import from_dict

    registry = write_demo_registry(tmp_path / "objects.yaml", write_demo_models(tmp_path / "models"))

    def config(out, **deepim):
        return from_dict(TrainConfig, {
            "stage": "deepim", "out": str(tmp_path / out), "seed": 0, "device": "cpu", "threads": 1,
            "deepim": {"objects_file": str(registry),
                       "data": {"width": 160, "height": 120, "objects_per_image": 1, "distractors": 0,
                                "K": list(small_K.ravel()), "distance": [0.4, 0.6]},
                       "model": {"encoder": "efficientnet_lite0", "fc_dim": 32, "head_width": 32},
                       "zoom": {"width": 64, "height": 48}, "loss": {"n_points": 100, "disentangled": True},
                       "optim": {"steps": 2, "batch_size": 2, "lr": 1e-3, "train_iter": 1},
                       "checkpoint_every": 100, "image_every": 0, **deepim}})

    run_deepim(config("first"))
    first = read_checkpoint(tmp_path / "first" / "checkpoints" / "deepim_last.pt", "deepim")
    run_deepim(config("second", init_checkpoint=str(tmp_path / "first" / "checkpoints" / "deepim_last.pt"),
                      optim={"steps": 0, "batch_size": 2, "train_iter": 1}))
    second = read_checkpoint(tmp_path / "second" / "checkpoints" / "deepim_last.pt", "deepim")
    assert second.resume["step"] == 0
    for key, value in first.weights.items():
        torch.testing.assert_close(second.weights[key], value)
    other = config("third", init_checkpoint=str(tmp_path / "first" / "checkpoints" / "deepim_last.pt"))
    other.deepim.model.head_width = 64
    with pytest.raises(ConfigError, match="another network"):
        run_deepim(other)
