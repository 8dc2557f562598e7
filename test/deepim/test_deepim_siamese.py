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
    # the observed and rendered crops share the trunk: swapping them changes the fused input, not the trunk's
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
