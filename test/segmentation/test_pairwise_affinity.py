"""BoxInst's colour-affinity term (losses/segmentation.py) against a per-pixel-pair loop, and what it rewards."""

import math

import cv2
import numpy as np
import pytest
import torch

from dsc_pose_core.losses.segmentation import colour_similarity, neighbour_offsets, pairwise_affinity_loss


def brute_force(logits, lab, region, dilation, threshold, theta):
    batch, height, width = logits.shape
    total, count = 0.0, 0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                for dy, dx in neighbour_offsets(dilation):
                    v, u = y + dy, x + dx
                    if not (0 <= v < height and 0 <= u < width) or not (region[b, y, x] and region[b, v, u]):
                        continue
                    similarity = math.exp(-float(np.linalg.norm(lab[b, :, y, x] - lab[b, :, v, u])) / theta)
                    if similarity < threshold:
                        continue
                    p, q = 1 / (1 + math.exp(-logits[b, y, x])), 1 / (1 + math.exp(-logits[b, v, u]))
                    total -= math.log(p * q + (1 - p) * (1 - q))
                    count += 1
    return total / max(count, 1)


@pytest.mark.parametrize("dilation", [1, 2])
def test_pairwise_term_matches_a_loop_over_pixel_pairs(dilation):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (2, 7, 9)).astype(np.float64)
    # few colours so that many neighbours are similar and some are not
    lab = rng.integers(0, 3, (2, 3, 7, 9)).astype(np.float64) * 1.5
    region = rng.uniform(size=(2, 7, 9)) < 0.8
    expected = brute_force(logits, lab, region, dilation, 0.3, 2.0)
    got = pairwise_affinity_loss(torch.from_numpy(logits), torch.from_numpy(lab), torch.from_numpy(region), dilation)
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_colour_similarity_is_zero_off_the_image_and_one_for_equal_colours():
    lab = torch.zeros(1, 3, 4, 5, dtype=torch.float64)
    similarity = colour_similarity(lab, 0, 2, 2.0)
    assert similarity[0, :, :3].eq(1).all() and similarity[0, :, 3:].eq(0).all()


def test_outline_on_the_colour_edge_costs_less_than_one_beside_it():
    """A dark disc on a light background: a mask whose outline follows the disc's edge pays only for
    the few similar-colour pairs across it, a mask two pixels too large pays for a band of them; and the
    gradient of a confident but wrong band pulls it towards the edge."""
    image = np.full((40, 40, 3), 200, np.uint8)
    disc = np.zeros((40, 40), np.uint8)
    cv2.circle(disc, (20, 20), 10, 1, -1)
    image[disc > 0] = (40, 60, 90)
    lab = torch.from_numpy(cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)).permute(2, 0, 1)[None]
    region = torch.ones(1, 40, 40, dtype=torch.bool)
    aligned = torch.from_numpy(np.where(disc > 0, 4.0, -4.0))[None].float()
    grown = torch.from_numpy(np.where(cv2.dilate(disc, np.ones((5, 5), np.uint8)) > 0, 4.0, -4.0))[None].float()
    assert pairwise_affinity_loss(aligned, lab.float(), region) < 0.5 * pairwise_affinity_loss(grown, lab.float(), region)
    grown.requires_grad_(True)
    pairwise_affinity_loss(grown, lab.float(), region).backward()
    band = (cv2.dilate(disc, np.ones((5, 5), np.uint8)) > 0) & (disc == 0)
    assert (grown.grad[0][torch.from_numpy(band)] > 0).float().mean() > 0.9  # descent lowers the band's logits


def test_no_pairs_gives_zero_and_keeps_the_graph():
    logits = torch.zeros(1, 5, 5, requires_grad=True)
    loss = pairwise_affinity_loss(logits, torch.zeros(1, 3, 5, 5), torch.zeros(1, 5, 5, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
