"""The trainers build the generator's config with the same function as ``dsc-pose-synth`` (no argv
round trip), and the function's defaults are the command's: both give the same SynthConfig."""

from __future__ import annotations

from dsc_pose_core.data.synth_cli import build_parser, config_from_args, synth_config


def test_typed_settings_and_the_command_give_the_same_generator_config(tmp_path):
    minimal = ["--models", "models", "--obj-ids", "1,5", "--n-images", "3", "--out", str(tmp_path)]
    assert config_from_args(build_parser().parse_args(minimal)) == synth_config("models", (1, 5), tmp_path, 3)
    full = minimal + ["--seed", "4", "--objects-per-image", "2", "--distractors", "3", "--distance", "0.6,1.3",
                      "--elevation", "0,80", "--rgb-ext", "jpg", "--object-jitter", "0.3", "--cluster-radius", "0.1",
                      "--backgrounds", "noise,checker", "--width", "320", "--height", "240"]
    typed = synth_config("models", [1, 5], tmp_path, 3, seed=4, objects_per_image=2, distractors=3,
                         distance=(0.6, 1.3), elevation=(0.0, 80.0), rgb_ext="jpg", object_jitter=0.3,
                         cluster_radius=0.1, backgrounds="noise,checker", width=320, height=240)
    assert config_from_args(build_parser().parse_args(full)) == typed
    assert typed != synth_config("models", [1, 5], tmp_path, 3)
