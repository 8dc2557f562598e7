import numpy as np
import torch

from dsc_pose_core.data.boxes import box_mask, box_xyxy_edges, loosen_box_xywh, mask_box_xywh
from dsc_pose_core.losses.segmentation import masked_segmentation_loss
from dsc_pose_core.segmentation.pseudo_labels import (IGNORE, mask_iou, pseudo_label, tta_probability,
                                                      uncertain_pixels)


def test_uncertain_pixels_follow_eq1_bounds():
    probability = torch.tensor([0.0, 0.29, 0.31, 0.5, 0.69, 0.71, 1.0])
    assert uncertain_pixels(probability, 0.7).tolist() == [False, False, True, True, True, False, False]


def test_pseudo_label_ignores_uncertain_and_clears_outside_box():
    probability = torch.full((6, 6), 0.9)
    probability[0, 0] = 0.5  # uncertain, but outside the box -> background
    probability[2, 2] = 0.5  # uncertain inside the box -> ignored
    probability[3, 3] = 0.1  # confident background inside the box
    inside = torch.from_numpy(box_mask(box_xyxy_edges((1, 1, 4, 4)), 6, 6))
    labels = pseudo_label(probability, inside)
    assert labels[0, 0] == 0 and labels[0, 5] == 0 and labels[5, 5] == 0
    assert labels[2, 2] == IGNORE and labels[3, 3] == 0 and labels[1, 1] == 1
    assert set(labels[~inside].unique().tolist()) == {0}


def test_masked_loss_skips_ignored_pixels():
    logits = torch.tensor([5.0, -5.0, 0.0, 100.0], requires_grad=True)
    labels = torch.tensor([1, 0, IGNORE, IGNORE], dtype=torch.uint8)
    loss = masked_segmentation_loss(logits, labels)
    loss.backward()
    assert loss.item() < 0.01
    assert logits.grad[2] == 0 and logits.grad[3] == 0 and logits.grad[0] != 0
    # a wrong confident pixel outside the ignore set does count
    bad = masked_segmentation_loss(torch.tensor([-5.0]), torch.tensor([1], dtype=torch.uint8))
    assert bad.item() > 4.0


def test_tta_merges_scales_and_flips_back_into_the_input_frame():
    """A 'network' that only sees the left half as foreground: without undoing the flip the merged
    map would be symmetric; with it, the left half stays confident at every scale."""
    def left_half_logits(images):
        width = images.shape[-1]
        logits = torch.full(images.shape[:1] + (1,) + images.shape[-2:], -10.0)
        logits[..., : width // 2] = 10.0
        # the flip must be undone by the merger: mark what the network saw
        return logits + 0.0 * images[:, :1]

    images = torch.zeros(1, 3, 16, 20)
    merged = tta_probability(left_half_logits, images, scales=(0.5, 1.0, 1.5), flips=True)
    assert merged.shape == (1, 1, 16, 20)
    # flipped passes see the left half too, and report it on the right after un-flipping, so
    # the merge is 0.5 everywhere: exactly the uncertain band of eq. (1)
    assert torch.allclose(merged[..., 2:-2], torch.full_like(merged[..., 2:-2], 0.5), atol=1e-4)
    without_flip = tta_probability(left_half_logits, images, scales=(1.0,), flips=False)
    assert without_flip[..., :10].min() > 0.99 and without_flip[..., 10:].max() < 0.01


def test_tta_is_consistent_for_an_equivariant_predictor():
    """A per-pixel predictor commutes with flips and scaling, so TTA must reproduce it."""
    images = torch.rand(2, 3, 24, 32)

    def brightness_logits(batch):
        return (batch.mean(1, keepdim=True) - 0.5) * 8

    merged = tta_probability(brightness_logits, images, scales=(1.0,), flips=True)
    assert torch.allclose(merged, torch.sigmoid(brightness_logits(images)), atol=1e-6)


def test_loosened_boxes_contain_the_original_and_stay_in_bounds():
    rng = np.random.default_rng(0)
    for _ in range(200):
        box = np.array([rng.integers(0, 600), rng.integers(0, 440), rng.integers(5, 40), rng.integers(5, 40)])
        loose = loosen_box_xywh(box, rng, 640, 480)
        assert loose[0] <= box[0] and loose[1] <= box[1]
        assert loose[0] + loose[2] >= min(640, box[0] + box[2]) and loose[1] + loose[3] >= min(480, box[1] + box[3])
        assert loose[0] >= 0 and loose[1] >= 0 and loose[0] + loose[2] <= 640 and loose[1] + loose[3] <= 480
        assert loose[2] <= np.ceil(box[2] * 1.3) + 2 and loose[3] <= np.ceil(box[3] * 1.3) + 2
    same = loosen_box_xywh((10, 10, 20, 20), np.random.default_rng(7), 640, 480)
    assert (same == loosen_box_xywh((10, 10, 20, 20), np.random.default_rng(7), 640, 480)).all()


def test_mask_helpers():
    mask = box_mask(box_xyxy_edges((2, 3, 4, 5)), 10, 12)
    assert mask.sum() == 20 and tuple(mask_box_xywh(mask)) == (2, 3, 4, 5)
    assert mask_box_xywh(np.zeros((4, 4), bool)) is None
    assert mask_iou(mask, mask) == 1.0 and mask_iou(mask, ~mask) == 0.0
