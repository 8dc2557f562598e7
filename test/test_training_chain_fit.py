"""The stage chain fits a new object from what a user has: a mesh in centimetres and a folder of RGB
images with 2D boxes (scene_camera.json + rgb/ + scene_boxes.json; no poses, masks or splits), and
the chain's Self6D stage (self6d: section) trains one network per object, exports it in the
pipeline's layout and is scored by the eval stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh

from dsc_pose_core.data import bop_io
from dsc_pose_core.objects.models_folder import ObjectSpec, write_models_folder
from dsc_pose_core.training.demo_data import write_demo_fit_data

NEW_ID = 3


def _new_mesh(path):
    """A mug-like part the package has never seen, in centimetres, coloured by height."""
    body = trimesh.creation.cylinder(radius=4.0, height=9.0, sections=24)
    handle = trimesh.creation.box(extents=(3.0, 1.2, 5.0))
    handle.apply_translation((5.0, 0.0, 0.5))
    mesh = trimesh.util.concatenate([body, handle])
    z = (mesh.vertices[:, 2] - mesh.vertices[:, 2].min()) / np.ptp(mesh.vertices[:, 2])
    colors = np.stack([40 + 200 * z, 180 - 120 * z, 90 + 0 * z, 255 + 0 * z], axis=1).astype(np.uint8)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colors)
    mesh.export(path)
    return path


def _user_photos(mesh, root, n_images=4):
    """'Photos' of the new object: renders under another appearance, stripped to the boxes-only layout."""
    from dsc_pose_core.data.synth_cli import main as synth

    models = write_models_folder([ObjectSpec(NEW_ID, "mug", str(mesh), units="cm")], root / "render").parent / "models"
    assert synth(["--models", str(models), "--obj-ids", str(NEW_ID), "--n-images", str(n_images), "--out", str(root),
                  "--seed", "11", "--split", "test", "--scene-id", "0", "--objects-per-image", "1",
                  "--distance", "0.4,0.6", "--elevation", "20,60", "--min-visib", "0.7", "--object-jitter", "0.3",
                  "--backgrounds", "photo", "--no-progress"]) == 0
    scene = bop_io.scene_dir(root, 0)
    gt, info = bop_io.load_scene_gt(scene / "scene_gt.json"), bop_io.load_scene_gt_info(scene / "scene_gt_info.json")
    boxes = {str(im): [{"obj_id": p.obj_id, "bbox_visib": list(i.bbox_visib)} for p, i in zip(gt[im], info[im])]
             for im in gt}
    for name in ("scene_gt.json", "scene_gt_info.json", "mask", "mask_visib", "depth"):
        path = scene / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for extra in ("models", "camera.json", "render"):
        path = root / extra
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    (scene / "scene_boxes.json").write_text(json.dumps(boxes))
    return root


def _train(repo_root, out, *overrides):
    cmd = [sys.executable, str(repo_root / "training" / "train.py"), "--config",
           str(repo_root / "config" / "train" / "tiny_chain.yaml"), "--out", str(out), *overrides]
    return subprocess.run(cmd, cwd=str(repo_root), capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_new_mesh_in_cm_and_boxes_only_images_fit_end_to_end(repo_root, tmp_path):
    mesh = _new_mesh(tmp_path / "mug_cm.ply")
    photos = _user_photos(mesh, tmp_path / "photos")
    assert sorted(p.name for p in bop_io.scene_dir(photos, 0).iterdir()) == ["rgb", "scene_boxes.json",
                                                                              "scene_camera.json"]
    out = tmp_path / "fit"
    objects = f"data.objects=[{{id: {NEW_ID}, name: mug, mesh: {mesh}, units: cm}}]"
    done = _train(repo_root, out, "stages=[synthetic, segmentation, dsc_posenet, eval]", 'data.objects_file=""',
                  objects, f"data.obj_ids=[{NEW_ID}]", f"data.dataset={photos}", 'data.splits_file=""',
                  "eval.refine_iterations=0")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the models folder the renderers read, written from the centimetre mesh
    written = trimesh.load(out / "objects" / "models" / f"obj_{NEW_ID:06d}.ply", process=False)
    assert np.ptp(written.vertices, axis=0) == pytest.approx([105.0, 80.0, 90.0], abs=0.5)  # mm: x from -4 to 6.5 cm
    # segmentation labelled every image's box without ground truth, and said it could not score them
    seg = json.loads((out / "segmentation" / "results.json").read_text())
    assert "scene_boxes.json" in seg["iou_not_measured"] and seg["val"]["mean"] is None
    pseudo = out / "segmentation" / "pseudo" / "iter_1" / "test" / "000000"
    assert sorted(p.name for p in (pseudo / "mask_visib").iterdir()) == [f"{i:06d}_000000.png" for i in range(4)]
    assert "IoU not measured" in done.stdout
    # the exported, compact checkpoint the node reads, and a report that says why it has no metrics
    exported = torch.load(out / "checkpoints" / "dsc_posenet" / f"obj_{NEW_ID:06d}.pt", weights_only=True)
    assert exported["compact"] and exported["obj_ids"] == [NEW_ID] and not exported["resume"]
    assert next(iter(exported["weights"].values())).dtype == torch.float16
    assert "No evaluation" in (out / "report.md").read_text()
    # a second run skips every stage; a changed mesh file re-runs the chain from the renders on
    again = _train(repo_root, out, "stages=[synthetic, segmentation, dsc_posenet, eval]", 'data.objects_file=""',
                   objects, f"data.obj_ids=[{NEW_ID}]", f"data.dataset={photos}", 'data.splits_file=""',
                   "eval.refine_iterations=0", "--stages", "synthetic")
    assert again.returncode == 0 and "[chain] synthetic: up to date" in again.stdout
    trimesh.load(mesh, process=False).apply_scale(1.1).export(mesh)
    changed = _train(repo_root, out, "stages=[synthetic, segmentation, dsc_posenet, eval]", 'data.objects_file=""',
                     objects, f"data.obj_ids=[{NEW_ID}]", f"data.dataset={photos}", 'data.splits_file=""',
                     "eval.refine_iterations=0", "--stages", "synthetic")
    assert changed.returncode == 0 and "[chain] synthetic: running" in changed.stdout
    assert np.ptp(trimesh.load(out / "objects" / "models" / f"obj_{NEW_ID:06d}.ply", process=False).vertices,
                  axis=0)[0] == pytest.approx(115.5, abs=0.5)


def test_config_errors_for_new_objects_and_self6d(repo_root, tmp_path):
    out = tmp_path / "chain"
    both = _train(repo_root, out, "data.objects=[{id: 3, name: mug, mesh: x.ply, units: cm}]")
    assert both.returncode == 2 and "objects_file (a registry) or objects (new meshes), not both" in both.stderr
    units = _train(repo_root, out, 'data.objects_file=""', "data.objects=[{id: 3, name: mug, mesh: x.ply}]")
    assert units.returncode == 2 and "units must be one of" in units.stderr
    missing = _train(repo_root, out, 'data.objects_file=""', "data.objects=[{id: 3, name: mug, mesh: no.ply, units: cm}]")
    assert missing.returncode == 2 and "mesh not found" in missing.stderr
    section = _train(repo_root, out, "self6d={obj_id: 1}")
    assert section.returncode == 2 and "self6d.obj_id is set by the chain" in section.stderr
    unlisted = _train(repo_root, out, "self6d={unlabeled: target}")
    assert unlisted.returncode == 2 and "self6d is not in stages" in unlisted.stderr
    init = _train(repo_root, out, "eval.init=self6d")
    assert init.returncode == 2 and "eval.init: self6d needs the self6d stage" in init.stderr
    assert not (out / "synthetic").exists()


@pytest.fixture(scope="module")
def fit_data(tmp_path_factory):
    return write_demo_fit_data(tmp_path_factory.mktemp("demo_fit"), n_train=2, n_val=2)


def test_self6d_stage_trains_exports_and_is_evaluated(repo_root, fit_data, tmp_path):
    out = tmp_path / "chain"
    self6d = ("self6d={unlabeled: target, model: {input_size: 32, head_channels: 16}, "
              "data: {source_images: 6, target_images: 4, test_images: 2, distance: [0.45, 0.8]}, "
              "loss: {render_faces: 100, faces_per_pixel: 5, perceptual: 0.0}, "
              "synthetic: {steps: 2, batch_size: 2}, self_stage: {steps: 1, batch_size: 2}, progress: false}")
    args = ["stages=[self6d, eval]", self6d, f"data.objects_file={fit_data['registry']}",
            f"data.dataset={fit_data['dataset']}", "eval.init=self6d", "eval.refine_iterations=0"]
    done = _train(repo_root, out, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    final = out / "self6d" / "checkpoints" / "obj_000001.pt"
    assert torch.load(final, weights_only=True)["resume"]["stage"] == "self"  # the last stage's weights
    exported = torch.load(out / "checkpoints" / "self6d" / "obj_000001.pt", weights_only=True)
    assert exported["compact"] and exported["obj_ids"] == [1]
    report = (out / "report.md").read_text()
    assert "initial pose `self6d`" in report and "| all |" in report and "checkpoints/self6d/obj_000001.pt" in report
    assert (out / "self6d" / "obj_000001" / "eval_self.json").is_file()
    again = _train(repo_root, out, *args)
    assert again.returncode == 0 and "[chain] self6d: up to date" in again.stdout
