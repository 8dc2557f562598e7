"""Self6D's network, its camera-independent pose parameterisation, the pipeline's ``self6d``
initialiser and a short training run through ``training/train.py``."""

import json

import numpy as np
import pytest
import torch
import yaml
from scipy.spatial.transform import Rotation

from dsc_pose_core.geometry.allocentric import allocentric_to_egocentric, egocentric_to_allocentric, ray_rotation
from dsc_pose_core.models.self6d import Self6dModelConfig, Self6dNet, decode_pose, encode_pose


def random_poses(n, seed=0):
    rng = np.random.default_rng(seed)
    R = torch.tensor(Rotation.random(n, random_state=seed).as_matrix(), dtype=torch.float64)
    t = torch.tensor(np.stack([rng.uniform(-0.2, 0.2, n), rng.uniform(-0.15, 0.15, n), rng.uniform(0.4, 1.5, n)], 1))
    return R, t


def window_around(R, t, K, scale=1.3, diameter=0.15):
    """The square window a detector box would give: centred near the projection, side ~ f d / z."""
    projected = (K @ t[..., None])[..., 0]
    centre = projected[:, :2] / projected[:, 2:3] + torch.tensor([3.0, -2.0], dtype=t.dtype)
    side = scale * torch.sqrt(K[:, 0, 0] * K[:, 1, 1]) * diameter / t[:, 2]
    return torch.cat([centre - side[:, None] / 2, centre + side[:, None] / 2], 1)


def test_ray_rotation_and_allocentric_round_trip():
    R, t = random_poses(16)
    ray = ray_rotation(t)
    assert torch.allclose(ray @ torch.tensor([0.0, 0.0, 1.0], dtype=t.dtype), t / t.norm(dim=1, keepdim=True), atol=1e-9)
    assert torch.allclose(ray @ ray.transpose(1, 2), torch.eye(3, dtype=t.dtype).expand(16, 3, 3), atol=1e-9)
    assert torch.allclose(ray_rotation(torch.tensor([[0.0, 0.0, 2.0]], dtype=t.dtype)), torch.eye(3, dtype=t.dtype)[None])
    assert torch.allclose(allocentric_to_egocentric(egocentric_to_allocentric(R, t), t), R, atol=1e-9)
    # an object moved sideways at the same egocentric rotation looks rotated: its allocentric rotation changes
    t_side = t + torch.tensor([0.3, 0.0, 0.0], dtype=t.dtype)
    assert not torch.allclose(egocentric_to_allocentric(R, t), egocentric_to_allocentric(R, t_side), atol=1e-3)


def test_encode_decode_round_trip_with_any_K():
    R, t = random_poses(32, seed=1)
    K = torch.tensor([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]], dtype=torch.float64).expand(32, 3, 3)
    windows = window_around(R, t, K)
    from dsc_pose_core.geometry.rotations import matrix_to_rotation_6d

    R_allo, offsets = encode_pose(R, t, windows, K, 0.15)
    R_back, t_back = decode_pose(matrix_to_rotation_6d(R_allo), offsets, windows, K, 0.15)
    assert torch.allclose(t_back, t, atol=1e-9) and torch.allclose(R_back, R, atol=1e-9)


def test_translation_follows_the_images_own_K():
    """The same object pose seen by a camera with another focal length and principal point: the crop
    shows the same thing (window scaled with the focal length), the network's targets are identical,
    and decoding with each image's own K gives back the true translation. A model trained with one K
    therefore stays correct with another."""
    R, t = random_poses(8, seed=2)
    K1 = torch.tensor([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]], dtype=torch.float64).expand(8, 3, 3)
    K2 = torch.tensor([[900.0, 0.0, 500.0], [0.0, 900.0, 380.0], [0.0, 0.0, 1.0]], dtype=torch.float64).expand(8, 3, 3)
    w1, w2 = window_around(R, t, K1), window_around(R, t, K2)
    # the detector's box offset (3, -2) px scales with the focal length too
    w2 = w2 + (torch.tensor([3.0, -2.0, 3.0, -2.0], dtype=t.dtype) * (900.0 / (572.4 * 573.6) ** 0.5 - 1.0))
    a1, o1 = encode_pose(R, t, w1, K1, 0.15)
    a2, o2 = encode_pose(R, t, w2, K2, 0.15)
    assert torch.allclose(o1, o2, atol=1e-3)
    from dsc_pose_core.geometry.rotations import matrix_to_rotation_6d

    _, t_in_2 = decode_pose(matrix_to_rotation_6d(a1), o1, w2, K2, 0.15)  # camera-1 targets, camera-2 image
    assert float((t_in_2 - t).norm(dim=1).max()) < 2e-3  # metres
    _, t_wrong = decode_pose(matrix_to_rotation_6d(a1), o1, w2, K1, 0.15)  # with the wrong K it is off
    assert float((t_wrong - t).norm(dim=1).max()) > 0.05


def test_network_outputs_and_initial_pose():
    torch.manual_seed(0)
    config = Self6dModelConfig(input_size=64, backbone_stages=2)
    net = Self6dNet(config).eval()
    images = torch.randint(0, 255, (3, 3, 64, 64), dtype=torch.uint8)
    windows = torch.tensor([[100.0, 80.0, 200.0, 180.0]]).expand(3, 4)
    sizes = torch.tensor([[640.0, 480.0]]).expand(3, 2)
    out = net(images, windows, sizes)
    assert out["rot6d"].shape == (3, 6) and out["offsets"].shape == (3, 3) and out["mask_logits"].shape == (3, 64, 64)
    # the ROI's position in the image is an input (CoordConv): moving the window changes the output
    out_moved = net(images, windows + torch.tensor([300.0, 200.0, 300.0, 200.0]), sizes)
    assert not torch.allclose(out["offsets"], out_moved["offsets"])
    with pytest.raises(ValueError, match="input_size"):
        Self6dNet(Self6dModelConfig(input_size=50))


@pytest.fixture(scope="module")
def tiny_run(demo_models, tmp_path_factory):
    """A short two-stage run of the real training CLI on the demo object."""
    from dsc_pose_core.training.cli import main

    out = tmp_path_factory.mktemp("self6d_run")
    args = ["--config", "config/train/self6d_target_cpu.yaml", "--out", str(out),
            f"self6d.data.models_dir={demo_models}", "self6d.obj_id=1", f"self6d.data.cache_dir={out / 'crops'}",
            "self6d.data.source_images=24", "self6d.data.target_images=8", "self6d.data.test_images=8",
            "self6d.data.distance=[0.4, 0.7]", "self6d.synthetic.steps=40", "self6d.synthetic.batch_size=8",
            "self6d.self_stage.steps=12", "self6d.self_stage.batch_size=4", "self6d.self_stage.lr=0.001",
            "self6d.checkpoint_every=10", "self6d.log_every=5", "self6d.image_every=10", "self6d.progress=false"]
    assert main(args) == 0
    return out


def test_short_training_run_lowers_the_losses(tiny_run):
    from dsc_pose_core.checkpoint import read_checkpoint

    history = json.loads(read_checkpoint(tiny_run / "checkpoints" / "self6d_last.pt", "self6d").resume["history"])
    synthetic = [h["loss"] for h in history if h["stage"] == "synthetic"]
    self_terms = [h for h in history if h["stage"] == "self"]
    assert len(synthetic) == 40 and len(self_terms) == 12
    assert np.mean(synthetic[-8:]) < 0.8 * np.mean(synthetic[:8])
    # every self-supervised term of eq. (4)-(11) is computed on the unlabeled RGB-D batches
    assert {"mask", "lab", "ms_ssim", "perceptual", "geom"} <= set(self_terms[0])
    # L_self of eq. (8) + eta L_geom with the weights this run used (its resolved configuration)
    weights = yaml.safe_load((tiny_run / "config.resolved.yaml").read_text())["self6d"]["loss"]
    self_total = [sum(weights[k] * h[k] for k in ("mask", "lab", "ms_ssim", "perceptual", "geom")) for h in self_terms]
    assert np.mean(self_total[-4:]) < np.mean(self_total[:4])
    results = json.loads((tiny_run / "results.json").read_text())
    assert results["synthetic"]["test"]["n"] == 8 and "self" in results
    # TensorBoard: losses and lr of both stages, sample pictures
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run / "tb"))
    events.Reload()
    tags = events.Tags()
    assert {"synthetic/loss", "synthetic/lr", "self/loss", "self/geom"} <= set(tags["scalars"])
    assert {"synthetic/sample", "self/sample"} <= set(tags["images"])


def test_pipeline_uses_self6d_as_initialiser(tiny_run, demo_models, tmp_path):
    """``PipelineConfig(init="self6d")`` loads the trained checkpoint; the pose is built with the
    frame's K: the same image and box with a doubled focal length puts the object twice as far."""
    import shutil

    from dsc_pose_core.objects.demo_object import write_demo_registry
    from dsc_pose_core.pipeline import Detection, PipelineConfig, load_pose_estimator

    (tmp_path / "self6d").mkdir()
    shutil.copy(tiny_run / "checkpoints" / "self6d_last.pt", tmp_path / "self6d" / "obj_000001.pt")
    registry = write_demo_registry(tmp_path / "objects.yaml", demo_models)
    config = PipelineConfig(init="self6d", self6d_checkpoints=str(tmp_path), refine_iterations=0)
    estimator = load_pose_estimator(registry, config)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    K = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]])
    K2 = K.copy()
    K2[0, 0] *= 2
    K2[1, 1] *= 2
    box = (250, 180, 90, 70)
    (r1,), (r2,) = estimator.estimate(image, K, [Detection(1, box)]), estimator.estimate(image, K2, [Detection(1, box)])
    assert r1.ok and r2.ok and np.isfinite(r1.t).all()
    assert r2.t[2] == pytest.approx(2 * r1.t[2], rel=1e-4)
    # both project to the same pixel with their own K
    assert np.allclose((K @ r1.t)[:2] / r1.t[2], (K2 @ r2.t)[:2] / r2.t[2], atol=1e-3)
    # a checkpoint of another object is refused
    shutil.copy(tiny_run / "checkpoints" / "self6d_last.pt", tmp_path / "self6d" / "obj_000001.pt")
    payload = torch.load(tmp_path / "self6d" / "obj_000001.pt", weights_only=True)
    payload["obj_ids"] = [7]
    torch.save(payload, tmp_path / "self6d" / "obj_000001.pt")
    from dsc_pose_core.pipeline import PipelineConfigError

    with pytest.raises(PipelineConfigError, match="checkpoint of object 7"):
        load_pose_estimator(registry, config)


def test_crop_augmentation_keeps_window_and_pixels_consistent():
    """An augmented crop equals cutting its (new) window out of the full image, so pose targets stay exact."""
    import cv2

    from dsc_pose_core.data.roi_crops import CropAugmentConfig, augment_crops
    from dsc_pose_core.segmentation.roi import crop

    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3)).astype(np.uint8), (0, 0), 4)
    image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)
    windows = np.array([[80.0, 60.0, 200.0, 180.0], [150.5, 40.0, 250.5, 140.0]])
    batch = {"rgb": torch.tensor(np.stack([crop(image, w, 64) for w in windows])).permute(0, 3, 1, 2),
             "mask": torch.zeros(2, 64, 64, dtype=torch.uint8), "depth": torch.zeros(2, 64, 64),
             "window": torch.tensor(windows, dtype=torch.float32)}
    geometric_only = CropAugmentConfig(p_color=0, p_blur=0, p_noise=0, shift=0.05, scale=(0.9, 1.1))
    out = augment_crops(batch, geometric_only, torch.Generator().manual_seed(1))
    assert not torch.allclose(out["window"], batch["window"])
    for i in range(2):
        expected = crop(image, out["window"][i].numpy(), 64).astype(np.float32)
        got = out["rgb"][i].permute(1, 2, 0).numpy().astype(np.float32)
        assert np.abs(got - expected)[4:-4, 4:-4].mean() < 2.0  # grey levels; borders: reflection padding
    photometric = augment_crops(batch, CropAugmentConfig(shift=0, scale=(1.0, 1.0), p_color=1, p_noise=1),
                                torch.Generator().manual_seed(2))
    assert torch.equal(photometric["window"], batch["window"]) and not torch.equal(photometric["rgb"], batch["rgb"])


def test_resumed_self_stage_takes_eq7_features_from_the_synthetic_stage(tiny_run, tmp_path):
    """With ``perceptual_features: synthetic_stage`` a run resumed inside the self stage rebuilds eq. (7)'s
    frozen network from ``self6d_synthetic.pt``, not from the partly self-trained weights it resumes."""
    import shutil

    from dsc_pose_core.checkpoint import read_checkpoint
    from dsc_pose_core.training.cli import parse_config
    from dsc_pose_core.training import self6d as S
    from dsc_pose_core.typed_config import ConfigError

    cfg = parse_config("config/train/self6d_target_cpu.yaml", ["self6d.loss.perceptual_features=synthetic_stage"]).self6d
    with pytest.raises(ConfigError, match="self6d_synthetic.pt"):
        S.synthetic_stage_weights(tmp_path, cfg)
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(tiny_run / "checkpoints" / "self6d_synthetic.pt", tmp_path / "checkpoints")
    weights = S.synthetic_stage_weights(tmp_path, cfg)
    last = read_checkpoint(tiny_run / "checkpoints" / "self6d_last.pt", "self6d").weights
    trunk_keys = [k for k in weights if k.startswith("trunk.") and weights[k].is_floating_point()]
    assert any(not torch.equal(weights[k], last[k]) for k in trunk_keys)  # the self stage moved the trunk
    trainer = S.Self6dTrainer.__new__(S.Self6dTrainer)
    trainer.cfg, trainer.device = cfg, torch.device("cpu")
    trainer.model = Self6dNet(cfg.model)
    trainer.model.load_state_dict(last)  # the weights being resumed
    trainer.freeze_perceptual_features(weights)
    reference = Self6dNet(cfg.model).eval()
    reference.load_state_dict(weights)
    images = torch.rand(2, 3, cfg.model.input_size, cfg.model.input_size)
    from dsc_pose_core.models.self6d import normalise_rgb

    for a, b in zip(trainer.feature_net(images), reference.trunk.levels(normalise_rgb(images))):
        torch.testing.assert_close(a, b)
    # a run without a synthetic stage started from init_checkpoint: its features come from that file
    cfg.stages = ["self"]
    cfg.init_checkpoint = str(tiny_run / "checkpoints" / "self6d_synthetic.pt")
    from_init = S.synthetic_stage_weights(tmp_path / "no_checkpoints_here", cfg)
    assert all(torch.equal(from_init[k], weights[k]) for k in trunk_keys)
    cfg.loss.perceptual_features = "imagenet"  # the default needs no checkpoint: a fixed ImageNet network
    assert S.synthetic_stage_weights(tmp_path / "elsewhere", cfg) is None
