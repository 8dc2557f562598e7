"""Training infrastructure shared by the stages: compact float16 checkpoints, multi-scene synthetic
datasets (parallel shards), every shipped training config parses, the 3-stage DSC backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsc_pose_core.models.dsc_posenet import DscModelConfig, DscPoseNet, model_from_checkpoint
from dsc_pose_core.typed_config import to_dict
from dsc_pose_core import checkpoint as ckpt
from dsc_pose_core.checkpoint import main as checkpoint_main, read_checkpoint, save_checkpoint


def test_three_stage_backbone_is_small_and_keeps_the_output_grid():
    torch.manual_seed(0)
    full = DscPoseNet(DscModelConfig(backbone_stages=4))
    small = DscPoseNet(DscModelConfig(backbone_stages=3))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < 3.0e6 < count(full)
    out = small(torch.zeros(2, 3, 64, 64))
    assert out["mask_logits"].shape == (2, 1, 16, 16) and out["keypoints"].shape == (2, 9, 2)


def test_compact_checkpoint_is_float16_weights_only_and_loads_into_float32(tmp_path):
    torch.manual_seed(0)
    config = DscModelConfig(backbone_stages=3, unnorm_size=64, norm_size=64)
    model = DscPoseNet(config).eval()
    optimiser = torch.optim.Adam(model.parameters())
    model(torch.randn(1, 3, 64, 64))["keypoints"].sum().backward()
    optimiser.step()
    src = save_checkpoint(tmp_path / "full.pt", ckpt.Checkpoint(
        "dsc_posenet", to_dict(config), [5], model.state_dict(), {"keypoints_3d": torch.zeros(9, 3)},
        resume={"optimizer": optimiser.state_dict(), "history": "[]", "stage": "lb", "step": 1}))
    assert checkpoint_main(["compact", str(src), str(tmp_path / "compact.pt")]) == 0
    compact = read_checkpoint(tmp_path / "compact.pt", "dsc_posenet")
    assert compact.resume == {} and compact.compact and compact.obj_ids == [5]
    assert compact.provenance["progress"] == {"stage": "lb", "step": 1}
    floats = [v for v in compact.weights.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert (tmp_path / "compact.pt").stat().st_size < 0.3 * src.stat().st_size
    again, _ = model_from_checkpoint(tmp_path / "compact.pt")
    assert next(again.parameters()).dtype == torch.float32
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x)["keypoints"], again.eval()(x)["keypoints"], atol=0.05)


def test_checkpoint_schema_refuses_other_methods_versions_and_old_formats_with_one_error(tmp_path):
    """One schema for every method: another method's file, an unknown version or a non-checkpoint is
    one CheckpointError naming the file; a version-1 file names the converter, which moves every value
    unchanged (the same network scores the same)."""
    torch.manual_seed(0)
    config = DscModelConfig(backbone_stages=3, unnorm_size=64, norm_size=64)
    model = DscPoseNet(config).eval()
    good = ckpt.Checkpoint("dsc_posenet", to_dict(config), [5], model.state_dict(), {"keypoints_3d": torch.ones(9, 3)})
    path = save_checkpoint(tmp_path / "dsc.pt", good)
    with pytest.raises(ckpt.CheckpointError, match="a dsc_posenet checkpoint, not a deepim one"):
        read_checkpoint(path, "deepim")
    newer = save_checkpoint(tmp_path / "v9.pt", good.payload() | {"version": 9})
    with pytest.raises(ckpt.CheckpointError, match="version 9"):
        read_checkpoint(newer)
    with pytest.raises(ckpt.CheckpointError, match="not a dsc_pose checkpoint"):
        read_checkpoint(save_checkpoint(tmp_path / "other.pt", {"format": "someone.else", "w": torch.ones(1)}))
    legacy = save_checkpoint(tmp_path / "v1.pt", {
        "format": "dsc_pose.dsc_posenet/1", "model": model.state_dict(), "model_config": to_dict(config), "obj_id": 5,
        "keypoints_3d": torch.ones(9, 3), "stage": "self", "step": 7, "optimizer": {}, "history": "[]", "config": {}})
    with pytest.raises(ckpt.CheckpointError, match="upgrade"):
        model_from_checkpoint(legacy)
    assert checkpoint_main(["upgrade", str(legacy), str(tmp_path / "v2.pt")]) == 0
    upgraded, checkpoint = model_from_checkpoint(tmp_path / "v2.pt")
    assert checkpoint.obj_ids == [5] and checkpoint.resume["step"] == 7
    assert checkpoint.provenance["upgraded_from"] == "dsc_pose.dsc_posenet/1"
    torch.testing.assert_close(checkpoint.inference["keypoints_3d"], torch.ones(9, 3))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(upgraded.eval()(x)["keypoints"], model(x)["keypoints"])


def test_checkpoint_cli_reports_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert checkpoint_main(["compact", str(bad), str(tmp_path / "out.pt")]) == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "out.pt").exists()


def _fake_scene(scene: Path, n: int, with_info: bool = True):
    (scene / "rgb").mkdir(parents=True)
    for i in range(n):
        (scene / "rgb" / f"{i:06d}.jpg").write_bytes(b"x")
    if with_info:
        (scene / "scene_gt_info.json").write_text(json.dumps({}))


def test_ensure_synthetic_counts_images_over_all_scenes(tmp_path):
    from dsc_pose_core.training.common import SyntheticDataConfig, ensure_synthetic

    root = tmp_path / "synth"
    for k in range(3):  # three shards rendered in parallel, one scene each
        _fake_scene(root / "train_synt" / f"{k:06d}", 4)
    cfg = SyntheticDataConfig(dir=str(root), n_images=12, generate=False)
    assert ensure_synthetic(cfg, [1], tmp_path) == root
    with pytest.raises(FileNotFoundError):  # 13 wanted, 12 there, generation off
        ensure_synthetic(SyntheticDataConfig(dir=str(root), n_images=13, generate=False), [1], tmp_path)
    _fake_scene(root / "train_synt" / "000003", 4, with_info=False)  # a shard still being written
    with pytest.raises(FileNotFoundError):
        ensure_synthetic(SyntheticDataConfig(dir=str(root), n_images=12, generate=False), [1], tmp_path)


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "config" / "train").glob("*.yaml")))
def test_every_training_config_parses(repo_root, name):
    from dsc_pose_core.training.cli import parse_config

    from dsc_pose_core.training.chain import CHAIN_STAGES
    from dsc_pose_core.training.stages import STAGES

    config = parse_config(repo_root / "config" / "train" / name)
    stages = getattr(config, "stages", None)  # a chain config names several stages
    assert set(stages) <= set(CHAIN_STAGES) if stages else config.stage in STAGES


def test_config_inherits_from_bases_and_saves_the_resolved_config(tmp_path, capsys):
    import yaml

    from dsc_pose_core.training.cli import parse_config, save_resolved_config
    from dsc_pose_core.typed_config import ConfigError

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "machine.yaml").write_text("seed: 3\ndevice: cpu\nthreads: 1\n")
    (tmp_path / "base" / "deepim.yaml").write_text(
        "base: machine.yaml\nstage: deepim\ndeepim:\n  optim: {steps: 7, batch_size: 4}\n  zoom: {width: 64, height: 48}\n")
    run = tmp_path / "run.yaml"
    run.write_text("base: [base/deepim.yaml]\nthreads: 2\nout: out/x\ndeepim:\n  optim: {steps: 9}\n")
    config = parse_config(run, ["deepim.optim.lr=0.01"])
    assert (config.seed, config.device, config.threads, config.stage) == (3, "cpu", 2, "deepim")
    # mappings merge key by key: the base's batch size stays, this file's steps win, overrides win last
    assert (config.deepim.optim.steps, config.deepim.optim.batch_size, config.deepim.optim.lr) == (9, 4, 0.01)
    assert (config.deepim.zoom.width, config.deepim.zoom.height) == (64, 48)
    path = save_resolved_config(config, str(tmp_path / "out"), "python training/train.py --config run.yaml")
    saved = yaml.safe_load(path.read_text())
    assert saved["deepim"]["optim"]["steps"] == 9 and saved["threads"] == 2 and "base" not in saved
    assert "steps: 9" in capsys.readouterr().out
    (tmp_path / "base" / "machine.yaml").write_text("base: ../run.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        parse_config(run)
    (tmp_path / "bad.yaml").write_text("base: no_such.yaml\nstage: deepim\n")
    with pytest.raises(ConfigError, match="not found"):
        parse_config(tmp_path / "bad.yaml")


def test_version_1_deepim_self6d_and_segmentation_files_convert_with_every_value_moved(tmp_path):
    """The converter for the other methods' version-1 layouts: DeepIM (state_dict + model + zoom, units,
    observed box, step), Self6D (model + model_config + obj_id + diameter) and a segmentation file that
    only names its encoder (as early ones did)."""
    w = {"w": torch.ones(2)}
    deepim = ckpt.upgrade({"format": "dsc_pose.deepim.v1", "state_dict": w, "model": {"width": 0.5}, "obj_ids": [1, 5],
                           "zoom": {"width": 64, "height": 48}, "translation_units": "zoom", "observed_box": "detection",
                           "step": 12, "train_seconds": 3.0, "optimizer": {"state": {}}, "object_names": ["ape", "can"]})
    assert (deepim.method, deepim.network, deepim.obj_ids) == ("deepim", {"width": 0.5}, [1, 5])
    assert deepim.inference == {"zoom": {"width": 64, "height": 48}, "translation_units": "zoom",
                                "observed_box": "detection"}
    assert deepim.resume["step"] == 12 and deepim.provenance["object_names"] == ["ape", "can"]
    self6d = ckpt.upgrade({"format": "dsc_pose.self6d/1", "model": w, "model_config": {"backbone": "resnet18"},
                           "obj_id": 5, "diameter": 0.2, "stage": "self", "step": 4, "compact": True})
    assert (self6d.method, self6d.obj_ids, self6d.inference) == ("self6d", [5], {"diameter": 0.2})
    assert self6d.compact and self6d.resume == {} and self6d.provenance["progress"] == {"stage": "self", "step": 4}
    shared = ckpt.upgrade({"format": "dsc_pose.dsc_posenet/1", "model": w, "model_config": {"n_objects": 2},
                           "obj_id": 1, "obj_ids": torch.tensor([1, 5]), "keypoints_3d": torch.zeros(2, 9, 3)})
    assert shared.obj_ids == [1, 5] and shared.inference["keypoints_3d"].shape == (2, 9, 3)
    seg = ckpt.upgrade({"format": "dsc_pose.segmentation/1", "state_dict": w, "config": {}, "obj_ids": [1],
                        "encoder": "resnet18", "iteration": 0})
    assert seg.network == {"encoder": "resnet18"} and seg.weights["foreground_prior_logit"].shape == (1,)
    with pytest.raises(ckpt.CheckpointError, match="cannot convert"):
        ckpt.upgrade({"format": "dsc_pose.segmentation/1", "state_dict": w, "config": {}, "obj_ids": [1]})
