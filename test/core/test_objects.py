import json

import numpy as np
import pytest

from dsc_pose_core.objects import (MeshLoadError, ObjectRegistry, RegistryError, farthest_point_sampling,
                                   load_mesh, load_models_info, object_keypoints)


def test_bop_mesh_loads_in_metres_with_colours(lmo_root):
    mesh = load_mesh(lmo_root / "models" / "obj_000005.ply")
    info = load_models_info(lmo_root / "models" / "models_info.json")[5]
    assert mesh.vertex_colors is not None and mesh.vertex_colors.shape == mesh.vertices.shape
    assert 0.0 <= mesh.vertex_colors.min() and mesh.vertex_colors.max() <= 1.0
    extent = mesh.vertices.max(0) - mesh.vertices.min(0)
    np.testing.assert_allclose(extent, info.bbox_size, rtol=1e-3)
    assert abs(mesh.diameter() - info.diameter) < 1e-4  # metres: 0.1 mm
    assert 0.1 < info.diameter < 0.3  # the can is ~20 cm, so units are metres


def test_models_info_symmetries_in_metres(lmo_root):
    infos = load_models_info(lmo_root / "models" / "models_info.json")
    assert sorted(oid for oid, info in infos.items() if info.is_symmetric) == [10, 11]
    eggbox_flip = infos[10].symmetries_discrete[0]
    raw = json.loads((lmo_root / "models" / "models_info.json").read_text())["10"]["symmetries_discrete"][0]
    np.testing.assert_allclose(eggbox_flip[:3, 3], np.array(raw).reshape(4, 4)[:3, 3] / 1000.0)
    np.testing.assert_allclose(eggbox_flip[:3, :3] @ eggbox_flip[:3, :3].T, np.eye(3), atol=1e-4)


def test_missing_and_corrupt_meshes_raise_clear_errors(tmp_path):
    with pytest.raises(MeshLoadError, match="not found"):
        load_mesh(tmp_path / "nope.ply")
    corrupt = tmp_path / "corrupt.ply"
    corrupt.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n")
    with pytest.raises(MeshLoadError, match="corrupt.ply"):
        load_mesh(corrupt)


def test_farthest_point_sampling_spreads_points():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(2000, 3))
    chosen = farthest_point_sampling(points, 8, start=np.zeros(3))
    assert np.allclose(chosen[0], points[np.argmax(np.linalg.norm(points, axis=1))])
    pairwise = np.linalg.norm(chosen[:, None] - chosen[None], axis=-1) + np.eye(8) * 1e9
    random_pick = points[rng.choice(2000, 8, replace=False)]
    random_pairwise = np.linalg.norm(random_pick[:, None] - random_pick[None], axis=-1) + np.eye(8) * 1e9
    assert pairwise.min() > random_pairwise.min()


def test_keypoints_are_on_the_mesh_and_cached(lmo_root, tmp_path):
    mesh = load_mesh(lmo_root / "models" / "obj_000001.ply")
    keypoints = object_keypoints(mesh, 8, cache_dir=str(tmp_path))
    assert keypoints.shape == (9, 3)
    np.testing.assert_allclose(keypoints[-1], mesh.bbox_center)
    vertex_distance = np.linalg.norm(mesh.vertices[None] - keypoints[:8, None], axis=-1).min(1)
    assert vertex_distance.max() < 1e-12
    cached = list((tmp_path / "keypoints").glob("*.npy"))
    assert len(cached) == 1
    np.testing.assert_array_equal(object_keypoints(mesh, 8, cache_dir=str(tmp_path)), keypoints)


def test_registry_reads_lmo_objects(lmo_root):
    registry = ObjectRegistry.from_yaml("config/objects.yaml", models_dir=str(lmo_root / "models"))
    assert registry.ids == [1, 5, 6, 8, 9, 10, 11, 12]
    assert registry.by_name("eggbox").model_info.is_symmetric
    assert not registry[1].model_info.is_symmetric
    assert abs(registry[8].diameter - 0.261472) < 1e-6
    with pytest.raises(KeyError, match="unknown object id 2"):
        registry[2]


def test_registry_errors_and_symmetry_override(tmp_path, lmo_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text("objects: {id: 1}\n")
    with pytest.raises(RegistryError, match="list under 'objects'"):
        ObjectRegistry.from_yaml(bad)
    with pytest.raises(RegistryError, match="not found"):
        ObjectRegistry.from_yaml(tmp_path / "absent.yaml")
    custom = tmp_path / "objects.yaml"
    custom.write_text(
        f"models_dir: {lmo_root / 'models'}\n"
        "objects:\n  - {id: 5, name: can, mesh: obj_000005.ply, symmetry: {continuous: [{axis: [0, 0, 1]}]}}\n"
        "  - {id: 7, name: ghost, mesh: obj_000007.ply}\n"
    )
    registry = ObjectRegistry.from_yaml(custom)
    assert len(registry[5].model_info.symmetries_continuous) == 1
    with pytest.raises(Exception, match="obj_000007.ply"):
        registry[7].mesh
