"""GrabCut refinement of pseudo labels and the prior correction of the class-balanced loss."""

import math

import cv2
import numpy as np
import pytest
import torch

from dsc_pose_core.models.segmentation import RoiSegmenter
from dsc_pose_core.segmentation.grabcut_refine import grabcut_refine
from dsc_pose_core.segmentation.pseudo_labels import IGNORE, mask_iou
from dsc_pose_core import checkpoint as ckpt
from dsc_pose_core.typed_config import ConfigError
from dsc_pose_core.models.segmentation import model_from_checkpoint
from dsc_pose_core.training.segmentation import OptimConfig, SegmentationConfig, refined_labels, train_steps


def disc_scene(seed=0, size=(120, 160)):
    """A red disc on a green-grey noisy table; its mask and a loosened box around it."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.clip(rng.normal((70, 110, 80), 12, (height, width, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (80, 60), 25, 1, -1)
    image[mask > 0] = np.clip(rng.normal((210, 40, 40), 12, (int(mask.sum()), 3)), 0, 255).astype(np.uint8)
    return image, mask > 0, (48, 28, 64, 64)


def blurred_probability(mask, grow_px):
    """A network-like probability: the mask grown by ``grow_px`` and blurred (outline too far out)."""
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * grow_px + 1,) * 2, np.uint8))
    return cv2.GaussianBlur(grown.astype(np.float32), (0, 0), 3.0)


def test_grabcut_pulls_a_bloated_mask_back_to_the_image_edge():
    image, truth, box = disc_scene()
    probability = blurred_probability(truth, 3)  # its confident core (P >= 0.9) still inside the disc
    network = probability >= 0.5
    refined = grabcut_refine(image, probability, box, background_below=0.3, foreground_above=0.9)
    assert mask_iou(network, truth) < 0.8
    assert mask_iou(refined, truth) > 0.95
    inside = np.zeros_like(truth)
    inside[28:92, 48:112] = True
    assert not (refined & ~inside).any()  # nothing outside the box


def test_grabcut_keeps_confident_seeds_and_handles_empty_and_bad_input():
    image, truth, box = disc_scene(1)
    probability = truth.astype(np.float32)  # every pixel certain: nothing left to decide
    refined = grabcut_refine(image, probability, box, background_below=0.3, foreground_above=0.9)
    assert np.array_equal(refined, truth)
    assert not grabcut_refine(image, np.zeros_like(probability), box, 0.3, 0.9).any()
    assert not grabcut_refine(image, probability, (500, 500, 10, 10), 0.3, 0.9).any()  # box off the image
    with pytest.raises(ValueError, match="background_below"):
        grabcut_refine(image, probability, box, 0.6, 0.9)
    with pytest.raises(ValueError, match="differ in size"):
        grabcut_refine(image[:50], probability, box, 0.3, 0.9)


def test_refined_labels_ignore_only_conflicts_with_confident_network_pixels():
    probability = np.array([[0.95, 0.95, 0.5, 0.5, 0.1, 0.1]], np.float32)
    refined = np.array([[True, False, True, False, True, False]])
    region = np.ones_like(refined)
    labels = refined_labels(probability, refined, region, confidence=0.7)
    # confident fg kept / contradicted, uncertain decided by the cut, confident bg contradicted / kept
    assert labels.tolist() == [[1, IGNORE, 1, 0, IGNORE, 0]]
    region[0, 0] = False
    assert refined_labels(probability, refined, region, 0.7)[0, 0] == 0  # outside the box: background


def test_refine_option_is_validated():
    cfg = SegmentationConfig()
    cfg.pseudo.refine = "crf"
    with pytest.raises(ConfigError, match="refine"):
        cfg.validate()
    cfg.pseudo.refine = "grabcut"
    cfg.eval.refine = "snake"
    with pytest.raises(ConfigError, match="eval.refine"):
        cfg.validate()
    cfg.eval.refine = "grabcut"
    cfg.prior_correction = "always"
    with pytest.raises(ConfigError, match="prior_correction"):
        cfg.validate()
    cfg.prior_correction = "every_round"
    cfg.pseudo.grabcut_foreground = 0.4
    with pytest.raises(ConfigError, match="grabcut_foreground"):
        cfg.validate()


class FixedBatcher:
    """Every batch: channel 0 ROIs with a 25 % foreground square, channel 1 with 50 % (plus ignored pixels)."""

    def batch(self, batch_size, real_fraction, with_affinity=False):
        images = torch.randn(batch_size, 3, 32, 32)
        labels = torch.zeros(batch_size, 32, 32, dtype=torch.uint8)
        channels = torch.tensor([i % 2 for i in range(batch_size)])
        for i, channel in enumerate(channels):
            if channel == 0:
                labels[i, :16, :16] = 1
            else:
                labels[i, :, :16] = 1
            labels[i, 0, :] = IGNORE  # never counted
            labels[i, 0, :16] = IGNORE
        return images, labels, channels


def test_balanced_training_records_the_foreground_prior_and_the_output_uses_it():
    torch.manual_seed(0)
    model = RoiSegmenter(3, "resnet18", decoder_channels=16, output_stride=8, atrous_rates=(1, 2, 3))
    images = torch.randn(2, 3, 32, 32)
    info = train_steps(model, FixedBatcher(), OptimConfig(steps=0), torch.device("cpu"), "none")
    assert info["final_loss"] is None and torch.count_nonzero(model.foreground_prior_logit) == 0
    opt = OptimConfig(steps=2, batch_size=4, lr=0.0, balance_classes=True)  # lr 0: weights unchanged
    train_steps(model, FixedBatcher(), opt, torch.device("cpu"), "no prior")
    assert torch.count_nonzero(model.foreground_prior_logit) == 0
    info = train_steps(model, FixedBatcher(), opt, torch.device("cpu"), "balanced", set_prior=True)
    fg0 = 16 * 15 / (32 * 31)  # row 0 ignored
    fg1 = 16 * 31 / (32 * 31)
    expected = [math.log(fg0 / (1 - fg0)), math.log(fg1 / (1 - fg1)), 0.0]  # channel 2 unseen: unchanged
    assert model.foreground_prior_logit.tolist() == pytest.approx(expected, abs=1e-5)
    assert info["foreground_prior_logit"] == pytest.approx(expected, abs=1e-4)
    model.eval()
    with torch.no_grad():
        after = model(images)
        model.foreground_prior_logit.zero_()
        uncorrected = model(images)
    assert torch.allclose(after - uncorrected, torch.tensor(expected).view(1, 3, 1, 1).expand_as(after), atol=1e-4)
    # the plain loss never sets it
    train_steps(model, FixedBatcher(), OptimConfig(steps=1, batch_size=4, lr=0.0), torch.device("cpu"), "plain",
                set_prior=True)
    assert torch.count_nonzero(model.foreground_prior_logit) == 0


def test_checkpoints_keep_the_prior_and_older_ones_load_without_it(tmp_path):
    """The prior travels in the weights; a version-1 file from before it existed is refused with the
    converter's command, and once converted loads with no correction."""
    model = RoiSegmenter(2, "resnet18", 16)
    model.set_foreground_prior(torch.tensor([0.25, float("nan")]))
    assert model.foreground_prior_logit.tolist() == pytest.approx([math.log(1 / 3), 0.0])
    network = {"encoder": "resnet18", "decoder_channels": 16}
    path = ckpt.save_checkpoint(tmp_path / "new.pt", ckpt.Checkpoint("segmentation", network, [1, 5], model.state_dict()))
    assert model_from_checkpoint(path)[0].foreground_prior_logit.tolist() == pytest.approx([math.log(1 / 3), 0.0])
    old_state = {k: v for k, v in model.state_dict().items() if k != "foreground_prior_logit"}
    old = ckpt.save_checkpoint(tmp_path / "old.pt", {"format": "dsc_pose.segmentation/1", "state_dict": old_state,
                                                     "obj_ids": [1, 5], "config": {"segmentation": {"model": network}}})
    with pytest.raises(ckpt.CheckpointError, match="python -m dsc_pose_core.checkpoint upgrade"):
        model_from_checkpoint(old)
    assert ckpt.main(["upgrade", str(old)]) == 0
    assert torch.count_nonzero(model_from_checkpoint(old)[0].foreground_prior_logit) == 0


@pytest.mark.parametrize("kind", ["lovasz", "dice"])
def test_iou_surrogate_tracks_the_mask_and_skips_ignored_pixels(kind):
    from dsc_pose_core.losses.segmentation import iou_surrogate_loss

    labels = torch.zeros(2, 16, 16, dtype=torch.uint8)
    labels[:, 4:12, 4:12] = 1
    labels[:, 0, :] = IGNORE
    right = torch.where(labels == 1, 8.0, -8.0)
    half = right.clone()
    half[:, 4:12, 8:12] = -8.0  # half of each object missed
    assert iou_surrogate_loss(right, labels, kind) < 0.01
    assert iou_surrogate_loss(half, labels, kind) > 0.2
    scrambled = right.clone()
    scrambled[:, 0, :] = 8.0  # ignored pixels say anything
    assert torch.isclose(iou_surrogate_loss(scrambled, labels, kind), iou_surrogate_loss(right, labels, kind))
    logits = half.clone().requires_grad_(True)
    iou_surrogate_loss(logits, labels, kind).backward()
    assert logits.grad[:, 4:12, 8:12].sum() < 0  # raising the missed pixels lowers the loss
    with pytest.raises(ValueError, match="surrogate"):
        iou_surrogate_loss(right, labels, "focal")


def test_iou_loss_option_is_validated():
    cfg = SegmentationConfig()
    cfg.finetune.iou_loss = "focal"
    with pytest.raises(ConfigError, match="finetune.iou_loss"):
        cfg.validate()
