"""Bad files (issue 31, docs/FAULTS.md): checkpoints (truncated, of another method, of another format
version, carrying pickled code), meshes (empty, degenerate), the object registry and training configs
(malformed YAML, unknown keys), and a checkpoint write that fails on the disk. Each is one clear error
that names the file; nothing half-written is left and no pickled code runs."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from dsc_pose_core.checkpoint import load_checkpoint, save_checkpoint
from dsc_pose_core.objects.mesh import MeshLoadError, load_mesh
from dsc_pose_core.objects.registry import ObjectRegistry, RegistryError
from dsc_pose_core.pipeline import PipelineConfig, PipelineConfigError, PoseEstimator

from test_pipeline import tiny_deepim_checkpoint


def _deepim(registry, path):
    return PoseEstimator(registry, PipelineConfig(init="box", refine_iterations=1, deepim_checkpoint=path))


def test_truncated_checkpoint_is_one_clear_error(registry, tmp_path):
    good = tiny_deepim_checkpoint(tmp_path / "deepim.pt")
    _deepim(registry, good).close()  # the untruncated file loads
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PipelineConfigError, match=f"cannot load DeepIM checkpoint {truncated}"):
        _deepim(registry, truncated)


def test_checkpoint_of_another_method_or_format_version(registry, repo_root, tmp_path):
    dsc = repo_root / "checkpoints" / "demo" / "dsc_posenet" / "obj_000001.pt"
    with pytest.raises(PipelineConfigError, match="a dsc_posenet checkpoint, not a deepim one"):
        _deepim(registry, dsc)
    payload = load_checkpoint(tiny_deepim_checkpoint(tmp_path / "deepim.pt"))
    payload["version"] = 3  # a future schema version
    newer = save_checkpoint(tmp_path / "deepim_v3.pt", payload)
    with pytest.raises(PipelineConfigError, match="checkpoint version 3; this dsc_pose reads version 2"):
        _deepim(registry, newer)
    payload["format"], payload["version"] = "dsc_pose.deepim.v1", None  # the schema before this one
    older = save_checkpoint(tmp_path / "deepim_v1.pt", payload)
    with pytest.raises(PipelineConfigError, match="python -m dsc_pose_core.checkpoint upgrade"):
        _deepim(registry, older)


class _Payload:
    """Unpickling this would create a file: a checkpoint must never run it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_pickled_code_is_refused_and_not_run(registry, tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "dsc_pose.deepim.v1", "state_dict": _Payload(marker)}, evil)
    with pytest.raises(PipelineConfigError, match="cannot load DeepIM checkpoint"):
        _deepim(registry, evil)
    assert not marker.exists()


def test_a_failing_disk_write_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"step": 1, "w": torch.ones(3)})

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def _ply(path, vertices, faces):
    lines = ["ply", "format ascii 1.0", f"element vertex {len(vertices)}", "property float x", "property float y",
             "property float z", f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    lines += [" ".join(map(str, v)) for v in vertices] + [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_empty_and_degenerate_meshes_are_one_clear_error(tmp_path):
    with pytest.raises(MeshLoadError, match="holds no triangle mesh"):
        load_mesh(_ply(tmp_path / "empty.ply", [], []))
    # every vertex on one line: triangles without area
    line = _ply(tmp_path / "line.ply", [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3)], [(0, 1, 2), (1, 2, 3)])
    with pytest.raises(MeshLoadError, match="line.ply is degenerate"):
        load_mesh(line)
    assert load_mesh(_ply(tmp_path / "ok.ply", [(0, 0, 0), (1, 0, 0), (0, 1, 0)], [(0, 1, 2)])).vertices.shape == (3, 3)


def test_registry_malformed_yaml_and_unknown_keys(tmp_path, lmo_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text("objects:\n  - {id: 1, name: ape, mesh: obj_000001.ply\n")
    with pytest.raises(RegistryError, match="not valid YAML"):
        ObjectRegistry.from_yaml(bad)
    top = tmp_path / "top.yaml"
    top.write_text(f"models_dir: {lmo_root / 'models'}\nmesh_unit: 0.001\nobjects:\n  - {{id: 1, name: ape, mesh: obj_000001.ply}}\n")
    with pytest.raises(RegistryError, match=r"unknown key\(s\) \['mesh_unit'\]"):
        ObjectRegistry.from_yaml(top)
    item = tmp_path / "item.yaml"
    item.write_text(f"models_dir: {lmo_root / 'models'}\nobjects:\n  - {{id: 1, name: ape, mesh: obj_000001.ply, symetry: none}}\n")
    with pytest.raises(RegistryError, match=r"object 1 \(ape\): unknown key\(s\) \['symetry'\]"):
        ObjectRegistry.from_yaml(item)


def test_training_config_malformed_yaml_and_unknown_keys(tmp_path):
    from dsc_pose_core.training.cli import parse_config
    from dsc_pose_core.typed_config import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: deepim\ndeepim: {optim: {steps: 3}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("stage: deepim\ndeepim:\n  optim: {stepz: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\]"):
        parse_config(unknown)
