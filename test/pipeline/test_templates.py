"""Rotation from rendered templates in pretrained features (dsc_pose_core.templates, init "templates").

The retrieval is checked on rendered queries with known rotations, placed off the image centre (where
a crop shows the object rotated relative to the optical axis) on a cluttered background; the
initialiser on a real LM-O val frame with the committed segmentation network.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dsc_pose_core.eval.metrics import rotation_error_deg
from dsc_pose_core.objects.registry import ObjectRegistry
from dsc_pose_core.pipeline import PipelineConfig, PipelineConfigError, PoseEstimator
from dsc_pose_core.render import FastRenderer
from dsc_pose_core.templates import (FeatureTrunk, TemplateBank, TemplateConfig, TemplateError, bank_for,
                                     cell_coverage, retrieve, similarity)

REPO = Path(__file__).resolve().parents[2]
SEG = REPO / "checkpoints" / "segmentation" / "lmo_seg.pt"
SMALL = TemplateConfig(n_views=100, n_inplane=12)  # 1,200 templates (~20 deg apart)
K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def lmo_registry():
    return ObjectRegistry.from_yaml(REPO / "config" / "objects.yaml")


@pytest.fixture(scope="module")
def trunk():
    return FeatureTrunk()


@pytest.fixture(scope="module")
def driller_bank(lmo_registry, trunk):
    return TemplateBank.build(8, lmo_registry[8].mesh, trunk, SMALL)


def _random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_trunk_gives_unit_feature_grids(trunk):
    images = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    f = trunk(images)
    assert f.shape == (2, 64, 112)  # stride 16 on 128 px, the Lite0 stage with 112 channels
    assert torch.allclose(f.norm(dim=-1), torch.ones(2, 64), atol=1e-4)
    assert cell_coverage(np.ones((1, 128, 128), bool), 16).shape == (1, 64)
    # the trunk stops after the feature's stage; its output is the whole trunk's feature at that stage
    import timm

    from dsc_pose_core.models import backbone

    whole = backbone.load_pretrained(timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(3,)),
                                     "efficientnet_lite0").eval()
    with torch.no_grad():
        reference = whole(backbone.normalise(torch.from_numpy(images).permute(0, 3, 1, 2), "efficientnet_lite0"))[0]
    assert len(trunk.net.blocks) == 5 < len(whole.blocks)
    assert torch.allclose(f, torch.nn.functional.normalize(reference, dim=1).flatten(2).transpose(1, 2), atol=1e-5)
    assert FeatureTrunk(stride=8)(images).shape == (2, 256, 40)


def test_similarity_prefers_the_same_features_and_the_same_silhouette():
    rng = torch.Generator().manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(4, 8, generator=rng), dim=-1)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    other = torch.nn.functional.normalize(torch.randn(4, 8, generator=rng), dim=-1)
    features = torch.stack([query, other, query]).transpose(0, 1).contiguous()  # [L, N, C]
    masks = torch.stack([mask, mask, torch.ones(4)])  # the third: same features, larger silhouette
    s = similarity(features, masks, query, mask)
    assert s[0] == pytest.approx(1.0, abs=1e-5)
    assert s[0] > s[2] > s[1]


def test_config_is_checked():
    for bad in (dict(stride=32), dict(n_views=0), dict(crop_size=100), dict(trunk="resnet18"), dict(context=0.5)):
        with pytest.raises(TemplateError):
            replace(TemplateConfig(), **bad).validate()


@pytest.mark.parametrize("corner", [False, True])
def test_retrieval_recovers_the_rotation_of_rendered_queries(lmo_registry, trunk, driller_bank, corner):
    """Random rotations (not on the template grid) of the driller, rendered into a 640x480 frame on random
    clutter, at the centre or near a corner (the crop then shows the object ~25 deg off the optical axis:
    the allocentric template rotation must be turned to the camera frame)."""
    rng = np.random.default_rng(1 + corner)
    mesh = lmo_registry[8].mesh
    renderer = FastRenderer(640, 480)
    renderer.add_object(8, mesh.decimated(4000))
    errors = []
    try:
        for _ in range(6):
            R = _random_rotation(rng)
            centre = np.array([560.0, 90.0]) if corner else np.array([320.0, 240.0])
            t = 0.9 * np.linalg.solve(K, [*centre, 1.0])
            out = renderer.render(K, [(8, R, t)], 640, 480)
            silhouette = out.instance > 0
            clutter = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
            image = np.where(silhouette[..., None], out.rgb, clutter).astype(np.uint8)
            ys, xs = np.nonzero(silhouette)
            box = np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5])
            found = retrieve(driller_bank, trunk, image, K, silhouette.astype(np.float32), box, SMALL, top_k=3)
            assert found.rotations.shape == (3, 3, 3) and found.scores[0] >= found.scores[1] >= found.scores[2]
            assert np.allclose(found.rotations[0] @ found.rotations[0].T, np.eye(3), atol=1e-6)
            errors.append(rotation_error_deg(found.rotations[0], R))
    finally:
        renderer.close()
    # a random rotation is 126 deg off on average; the grid's own spacing is ~20 deg
    assert np.median(errors) < 20.0 and max(errors) < 45.0, errors


def test_bank_cache_is_reused_refreshed_and_refuses_other_files(tmp_path, lmo_registry, trunk, monkeypatch):
    config = replace(TemplateConfig(n_views=6, n_inplane=2), cache_dir=str(tmp_path))
    mesh = lmo_registry[5].mesh
    bank = bank_for(5, mesh, trunk, config)
    files = list(tmp_path.glob("obj_000005_*.pt"))
    assert len(files) == 1 and bank.features.shape == (64, 12, 112)

    def no_build(*args, **kwargs):
        raise AssertionError("the cached bank should have been read")

    with monkeypatch.context() as m:
        m.setattr(TemplateBank, "build", classmethod(no_build))
        again = bank_for(5, mesh, trunk, config)
    assert torch.equal(again.features, bank.features) and np.allclose(again.rotations, bank.rotations)
    # other settings: another file, built anew; a stale key is not read as this bank
    bank_for(5, mesh, trunk, replace(config, n_inplane=3))
    assert len(list(tmp_path.glob("obj_000005_*.pt"))) == 2
    assert TemplateBank.load(files[0], 5, {**bank.key, "n_views": 7}) is None
    assert TemplateBank.load(files[0], 6, bank.key) is None
    # not a bank, not a torch file, and pickled code: one clear error each, nothing executed
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a file torch wrote")
    import pickle

    marker = tmp_path / "executed"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "code.pt").write_bytes(pickle.dumps(Boom()))
    for name in ("other.pt", "junk.pt", "code.pt"):
        with pytest.raises(TemplateError):
            TemplateBank.load(tmp_path / name, 5, bank.key)
    assert not marker.exists()  # the pickled call was never made
    # a bank file whose tensors do not fit together is refused, and bank_for builds over a damaged one
    data = torch.load(files[0], weights_only=True)
    data["masks"] = data["masks"][:3]
    torch.save(data, tmp_path / "misfit.pt")
    with pytest.raises(TemplateError, match="do not fit"):
        TemplateBank.load(tmp_path / "misfit.pt", 5, bank.key)
    files[0].write_bytes(b"truncated")
    rebuilt = bank_for(5, mesh, trunk, config)
    assert torch.equal(rebuilt.features, bank.features) and TemplateBank.load(files[0], 5, bank.key) is not None


def test_an_unwritable_cache_keeps_the_bank_in_memory(tmp_path, lmo_registry, trunk):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    config = replace(TemplateConfig(n_views=4, n_inplane=2), cache_dir=str(blocker / "templates"))
    bank = bank_for(5, lmo_registry[5].mesh, trunk, config)
    assert bank.features.shape == (64, 8, 112) and blocker.is_file()


def test_a_tiny_mask_falls_back_on_the_box(lmo_registry, trunk, driller_bank):
    """A mask of a few pixels would cut a crop of a few pixels (and a distance of metres): the box is used."""
    image = np.full((480, 640, 3), 90, np.uint8)
    probability = np.zeros((480, 640), np.float32)
    probability[200:202, 300:302] = 1.0
    box = np.array([250.0, 150.0, 370.0, 270.0])
    found = retrieve(driller_bank, trunk, image, K, probability, box, SMALL)
    assert np.allclose(found.box, box)
    with pytest.raises(TemplateError, match="no pixel"):
        retrieve(driller_bank, trunk, image, K, probability, np.array([700.0, 10.0, 720.0, 30.0]), SMALL)


def test_templates_initialiser_needs_masks(lmo_registry):
    with pytest.raises(PipelineConfigError, match="segmentation checkpoint"):
        PoseEstimator(lmo_registry, PipelineConfig(init="templates", obj_ids=[8]))
    with pytest.raises(PipelineConfigError, match="stride"):
        PoseEstimator(lmo_registry, PipelineConfig(init="templates", obj_ids=[8], segmentation_checkpoint=SEG,
                                                   templates=TemplateConfig(stride=4)))


def test_templates_initialiser_on_a_real_val_frame(lmo_registry, tmp_path):
    """On LM-O val frames, the template rotations of the driller and the duck beat the box initialiser's
    (canonical) rotations, with the aligner after them the masks are predicted once per detection, and the
    template score is the initialiser's own confidence."""
    from dsc_pose_core.data.bop_io import default_lmo_dir, find_rgb, load_splits, read_rgb, select_scene_images
    from dsc_pose_core.predict_cli import gt_detections

    assert SEG.is_file(), f"missing {SEG}"
    lmo = default_lmo_dir()
    im_ids = load_splits(lmo / "splits.json")["val"][:4]
    scene = select_scene_images(lmo, 2, "test", None, im_ids)
    config = PipelineConfig(init="templates", refiners=["align"], segmentation_checkpoint=SEG, obj_ids=[8, 9],
                            templates=replace(SMALL, cache_dir=str(tmp_path)))
    errors, box_errors, predicted = [], [], []
    with PoseEstimator(lmo_registry, config) as estimator:
        masks = estimator.frame_masks()
        original = masks.predictor.predict

        def counting(image, items):
            predicted.extend(items)
            return original(image, items)

        masks.predictor.predict = counting
        for im_id in im_ids:
            image = read_rgb(find_rgb(scene.scene_path, im_id))
            dets = [d for d in gt_detections(scene.gt, scene.gt_info, 2, im_id, image.shape[1], image.shape[0], 0)
                    if d.obj_id in (8, 9)]
            truth = {g.obj_id: g for g in scene.gt[im_id]}
            before = len(predicted)
            results = estimator.estimate(image, scene.cameras[im_id].K, dets)
            assert len(predicted) - before == len(dets)  # the aligner reads the initialiser's masks
            assert all(r.ok and r.refined for r in results)
            assert all(0.0 < r.init_score < 1.0 for r in results)
            errors += [rotation_error_deg(r.init_R, truth[r.obj_id].R) for r in results]
            box_errors += [rotation_error_deg(np.eye(3), truth[r.obj_id].R) for r in results]
    assert len(errors) >= 6
    assert np.median(errors) < 45.0 and np.median(errors) < 0.5 * np.median(box_errors), (errors, box_errors)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # one bank per object, kept for the next start
