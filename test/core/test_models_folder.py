"""A new object's mesh in any units -> the BOP models folder (millimetres + models_info.json) and the
registry every stage reads (objects/models_folder.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from dsc_pose_core.objects.models_folder import MeshSpecError, ObjectSpec, parse_specs, write_models_folder
from dsc_pose_core.objects.registry import ObjectRegistry


def _box_mesh(path, extents, offset=(0.0, 0.0, 0.0)):
    mesh = trimesh.creation.box(extents=extents)
    mesh.apply_translation(offset)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.tile([200, 30, 40, 255], (len(mesh.vertices), 1)))
    mesh.export(path)
    return path


@pytest.mark.parametrize("units, extents, offset", [("cm", (8.0, 4.0, 2.0), (1.0, 0.0, 0.0)),
                                                    ("m", (0.08, 0.04, 0.02), (0.01, 0.0, 0.0))])
def test_mesh_in_cm_or_m_becomes_millimetres_with_its_frame_and_colours_kept(tmp_path, units, extents, offset):
    src = _box_mesh(tmp_path / f"part.{'obj' if units == 'cm' else 'ply'}", extents, offset)
    registry_path = write_models_folder([ObjectSpec(3, "part", str(src), units=units)], tmp_path / "objects")
    models = tmp_path / "objects" / "models"
    written = trimesh.load(models / "obj_000003.ply", process=False)
    assert np.allclose(np.ptp(written.vertices, axis=0), [80.0, 40.0, 20.0], atol=1e-4)
    assert np.allclose(written.bounds.mean(axis=0), [10.0, 0.0, 0.0], atol=1e-4)  # not re-centred
    info = json.loads((models / "models_info.json").read_text())["3"]
    assert info["diameter"] == pytest.approx(np.sqrt(80 ** 2 + 40 ** 2 + 20 ** 2), rel=1e-6)
    assert (info["size_x"], info["min_x"]) == (pytest.approx(80.0), pytest.approx(-30.0))
    entry = ObjectRegistry.from_yaml(registry_path)[3]
    assert entry.name == "part" and entry.diameter == pytest.approx(0.0917, abs=1e-4)  # metres inside
    assert np.allclose(entry.mesh.vertex_colors[0], [200 / 255, 30 / 255, 40 / 255], atol=1e-2)


def test_converted_again_only_when_the_mesh_or_its_units_change(tmp_path):
    src = _box_mesh(tmp_path / "part.ply", (0.05, 0.05, 0.05))
    out = tmp_path / "objects"
    write_models_folder([ObjectSpec(1, "part", str(src), units="m")], out)
    ply = out / "models" / "obj_000001.ply"
    first = ply.stat().st_mtime_ns
    write_models_folder([ObjectSpec(1, "part", str(src), units="m")], out)
    assert ply.stat().st_mtime_ns == first
    _box_mesh(src, (0.06, 0.05, 0.05))
    write_models_folder([ObjectSpec(1, "part", str(src), units="m")], out)
    assert np.ptp(trimesh.load(ply, process=False).vertices, axis=0)[0] == pytest.approx(60.0)


def test_wrong_units_are_caught_by_the_object_size(tmp_path):
    src = _box_mesh(tmp_path / "part.ply", (0.08, 0.04, 0.02))  # metres, declared as millimetres
    with pytest.raises(MeshSpecError, match="0.0917 mm|across; expected"):
        write_models_folder([ObjectSpec(1, "part", str(src), units="mm")], tmp_path / "objects")
    assert not (tmp_path / "objects" / "objects.yaml").exists()


@pytest.mark.parametrize("items, message", [
    ([{"id": 1, "name": "a", "mesh": "a.ply"}], "units must be one of"),
    ([{"id": 1, "name": "a", "mesh": "a.ply", "units": "inch"}], "units must be one of"),
    ([{"id": 1, "name": "a", "mesh": "a.ply", "units": "m", "mesh_unit_scale": 1.0}], "not both"),
    ([{"id": 1, "name": "a", "mesh": "a.ply", "units": "m", "colour": 1}], "unknown keys"),
    ([{"id": 1, "name": "a", "units": "m"}], "missing"),
    ([{"id": 1, "name": "a", "mesh": "a", "units": "m"}, {"id": 1, "name": "b", "mesh": "b", "units": "m"}], "unique"),
    ([], "non-empty list"),
])
def test_bad_object_descriptions_are_one_clear_error(items, message):
    with pytest.raises(MeshSpecError, match=message):
        parse_specs(items)


def test_missing_mesh_file_is_named(tmp_path):
    with pytest.raises(MeshSpecError, match="mesh not found: .*nothing.ply"):
        write_models_folder([ObjectSpec(1, "a", str(tmp_path / "nothing.ply"), units="m")], tmp_path / "objects")
