"""BatchNorm statistics per view scale (models/dsc_posenet.py, ``ScaleSpecificBatchNorm2d``).

The un-normalised window and the normalised crop are separate forward passes with different image
statistics. Training normalises each with its own batch statistics; a single set of running
statistics averaged both, so at inference each view was normalised with statistics it never saw in
training (on the demo checkpoint: normalised-scale keypoint spread 0.65 of the truth, poses ~25 % too
far away). These tests pin down that each scale trains, stores and uses its own statistics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dsc_testlib import tiny_model_config
from dsc_pose_core.data.dsc_views import SyntheticPoseDataset, ViewAugmentConfig, synthetic_instances
from dsc_pose_core.models.dsc_posenet import (VIEW_SCALES, DscPoseNet, DscPoseNetEstimator, ScaleSpecificBatchNorm2d,
                                              normalise_rgb)
from dsc_pose_core.training import dsc_posenet as T


def _two_view_batch(seed: int = 0) -> dict:
    """uint8 views with clearly different statistics, like the two scales: a dark, mostly flat
    un-normalised window and a bright, textured normalised crop."""
    gen = torch.Generator().manual_seed(seed)
    cfg = tiny_model_config()
    # 16 images: the deepest layer of the 32 px crop is 1x1, and the stored variance is the unbiased
    # one (x 16/15 here), so fewer images would make the stored and the batch statistics differ
    u = (20 + 30 * torch.rand(16, 3, cfg.unnorm_size, cfg.unnorm_size, generator=gen)).to(torch.uint8)
    n = (120 + 130 * torch.rand(16, 3, cfg.norm_size, cfg.norm_size, generator=gen)).to(torch.uint8)
    return {"u_image": u, "n_image": n}


def _keypoints(model: DscPoseNet, images: torch.Tensor, view: str | None, training: bool) -> torch.Tensor:
    model = copy.deepcopy(model).train(training)  # a train-mode pass would update the statistics
    with torch.no_grad():
        return model(normalise_rgb(images), view=view)["keypoints"]


def test_inference_normalises_each_view_with_the_statistics_it_was_trained_with():
    torch.manual_seed(0)
    model = DscPoseNet(tiny_model_config())
    with torch.no_grad():  # outputs that depend on the normalisation, not ~0 offsets
        model.head.weight.normal_(std=0.05)
    batch = _two_view_batch()
    assert T.calibrate_view_statistics(model, [batch]) == 1
    for tag, view in (("u", "unnorm"), ("n", "norm")):
        trained = _keypoints(model, batch[f"{tag}_image"], view, training=True)  # batch statistics
        inferred = _keypoints(model, batch[f"{tag}_image"], view, training=False)  # stored statistics
        assert (inferred - trained).abs().mean() < 0.5, view  # view pixels
    # the two scales' statistics differ, so one shared set cannot serve both: with the shared
    # statistics (the running average of both scales) the normalised crop's keypoints move
    bn = model.stem[1]
    assert not torch.allclose(bn.running_mean_unnorm, bn.running_mean_norm, rtol=0.2)
    mixed = copy.deepcopy(model)
    for module in mixed.modules():
        if isinstance(module, ScaleSpecificBatchNorm2d):
            module.running_mean.copy_(0.5 * (module.running_mean_unnorm + module.running_mean_norm))
            module.running_var.copy_(0.5 * (module.running_var_unnorm + module.running_var_norm))
    trained = _keypoints(model, batch["n_image"], "norm", training=True)
    shared = _keypoints(mixed, batch["n_image"], None, training=False)
    assert (shared - trained).abs().max() > 10.0


def test_trainer_updates_each_scales_statistics_from_that_scales_views(tiny_dsc_data):
    torch.manual_seed(0)
    cfg = T.DscPoseNetConfig(models_dir=str(tiny_dsc_data["models"]), obj_id=1, model=tiny_model_config())
    _, kp = T.load_object(cfg)
    syn = SyntheticPoseDataset(synthetic_instances(tiny_dsc_data["synth"], 1), kp, cfg.model, ViewAugmentConfig())
    batch = torch.utils.data.default_collate([syn[i] for i in range(4)])
    trainer = T.DscPoseNetTrainer(cfg, kp)
    trainer.model.train()
    bn = trainer.model.stem[1]
    for module in trainer.model.modules():
        if isinstance(module, ScaleSpecificBatchNorm2d):
            module.momentum = None  # cumulative: after one batch the running mean is that batch's mean
    trainer.synthetic_losses(batch)
    for tag, view in (("u", "unnorm"), ("n", "norm")):
        with torch.no_grad():
            expected = trainer.model.stem[0](normalise_rgb(batch[f"{tag}_image"])).mean((0, 2, 3))
        assert torch.allclose(getattr(bn, f"running_mean_{view}"), expected, atol=1e-4), view
        assert int(getattr(bn, f"num_batches_tracked_{view}")) == 1


def test_estimator_runs_each_view_with_its_scale(tiny_dsc_data):
    model = DscPoseNet(tiny_model_config()).eval()
    calls = []

    def record(module, args, kwargs):
        calls.append((args[0].shape[-1], kwargs.get("view")))

    model.register_forward_pre_hook(record, with_kwargs=True)
    inst = synthetic_instances(tiny_dsc_data["synth"], 1)[0]
    from dsc_pose_core.data.dsc_views import read_rgb

    DscPoseNetEstimator(model, np.random.default_rng(0).normal(size=(9, 3)) * 0.02 + [0, 0, 0]).estimate(
        read_rgb(inst.image_path), inst.K, inst.box_xywh)
    cfg = model.config
    assert calls == [(cfg.unnorm_size, "unnorm"), (cfg.norm_size, "norm")]


def test_checkpoint_without_per_scale_statistics_loads_and_behaves_as_before():
    torch.manual_seed(0)
    model = DscPoseNet(tiny_model_config())
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))  # shared statistics away from their initial values
    old = {k: v for k, v in model.state_dict().items() if not any(k.endswith(f"_{v_}") for v_ in VIEW_SCALES)}
    assert len(old) < len(model.state_dict())
    reloaded = DscPoseNet(tiny_model_config())
    reloaded.load_state_dict(old)  # strict: the per-scale buffers are filled from the shared ones
    bn = reloaded.stem[1]
    assert torch.equal(bn.running_mean_norm, model.stem[1].running_mean)
    assert torch.equal(bn.running_var_unnorm, model.stem[1].running_var)
    reloaded.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reloaded(x, view="norm")["keypoints"], reloaded(x)["keypoints"])


def test_unknown_view_is_rejected():
    with pytest.raises(ValueError, match="view"):
        DscPoseNet(tiny_model_config())(torch.randn(1, 3, 64, 64), view="normalised")
