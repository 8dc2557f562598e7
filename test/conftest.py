from pathlib import Path

import pytest

from dsc_pose_core.data.bop_io import default_lmo_dir

REPO_ROOT = Path(__file__).resolve().parents[1]

LMO_REQUIRED = (
    "models/models_info.json",
    "models_eval/models_info.json",
    "splits.json",
    "test_targets_bop19.json",
    "test/000002/scene_gt.json",
    "test/000002/scene_gt_info.json",
    "test/000002/scene_camera.json",
    "reference/cnos-fastsammegapose_lmo-test.csv",
    "reference/gt_lmo-test.csv",
)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def lmo_root() -> Path:
    """The real LM-O data (``<repo>/../shared/data/lmo`` or ``$DSC_POSE_LMO``). In CI it is always
    present, so missing data fails the tests that need it, never skips them."""
    root = default_lmo_dir()
    missing = [rel for rel in LMO_REQUIRED if not (root / rel).exists()]
    assert not missing, f"LM-O data missing at {root}: {missing} (set DSC_POSE_LMO)"
    return root
