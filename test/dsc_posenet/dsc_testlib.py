"""Helpers shared by the DSC-PoseNet tests (a module of its own: every test folder has a
``conftest`` module, so importing from ``conftest`` picks whichever was loaded first)."""


def tiny_model_config():
    from dsc_pose_core.models.dsc_posenet import DscModelConfig

    return DscModelConfig(backbone="resnet18", decoder_channels=16, unnorm_size=64, window_px=80.0, norm_size=32)
