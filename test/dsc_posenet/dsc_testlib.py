"""Helpers shared by the DSC-PoseNet tests (a module of its own: every test folder has a
``conftest`` module, so importing from ``conftest`` picks whichever was loaded first)."""

import os


def tiny_model_config():
    from dsc_pose_core.models.dsc_posenet import DscModelConfig

    return DscModelConfig(backbone="resnet18", decoder_channels=16, unnorm_size=64, window_px=80.0, norm_size=32)


def renders_as_real_scene(root):
    """The renders of ``root/synth`` as a "real" BOP scene 0 (``root/real``, split train_real) whose pseudo
    labels (``root/pseudo``) are their visible masks."""
    scene = root / "synth" / "train_synt" / "000000"
    (root / "real" / "test").mkdir(parents=True)
    os.symlink(scene, root / "real" / "test" / "000000")
    (root / "real" / "splits.json").write_text('{"train_real": [0, 1, 2, 3, 4, 5]}')
    (root / "pseudo" / "test" / "000000").mkdir(parents=True)
    os.symlink(scene / "mask_visib", root / "pseudo" / "test" / "000000" / "mask_visib")
