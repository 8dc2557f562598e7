"""Inference sits beside training, not on top of it: the node and the pipeline, with every method's
committed checkpoint loaded, import no module of ``dsc_pose_core.training`` (trainers, synthetic data,
losses). Checked in a fresh interpreter, so other tests' imports cannot hide or fake it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
import dsc_pose_ros.node  # noqa: F401
from dsc_pose_core.objects.registry import ObjectRegistry
from dsc_pose_core.pipeline import PipelineConfig, PoseEstimator

registry = ObjectRegistry.from_yaml("config/objects.yaml")
loaded = []
for config in (PipelineConfig(init="dsc", dsc_checkpoints="checkpoints", deepim_checkpoint="checkpoints/deepim.pt",
                              refine_iterations=2),
               PipelineConfig(init="self6d", self6d_checkpoints="checkpoints", obj_ids=[5], refine_iterations=0),
               PipelineConfig(init="box", refine_iterations=0),
               PipelineConfig(init="box", refine_iterations=0, refiners=["align"],
                              segmentation_checkpoint="checkpoints/segmentation/lmo_seg.pt")):
    with PoseEstimator(registry, config) as estimator:
        loaded.append([config.init, len(estimator.dsc), len(estimator.self6d), estimator.refiner is not None,
                       [type(r).__name__ for r in estimator.refiners]])
print(json.dumps({"loaded": loaded,
                  "training": sorted(m for m in sys.modules if m.startswith("dsc_pose_core.training"))}))
"""


def test_node_and_pipeline_import_no_training_module(repo_root, lmo_root):
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [["dsc", 8, 0, True, ["DeepImStage"]], ["self6d", 0, 1, False, []],
                                ["box", 0, 0, False, []], ["box", 0, 0, False, ["AlignStage"]]]
    assert result["training"] == []


def test_every_registered_initialiser_is_one_the_node_offers():
    from dsc_pose_core import defaults
    from dsc_pose_core.align import hypothesis_rotations
    from dsc_pose_core.pipeline import INITIALISERS, refiner_order

    assert set(INITIALISERS) == set(defaults.INITIALISERS)
    for cls in INITIALISERS.values():
        assert callable(getattr(cls, "from_config")) and callable(getattr(cls, "initial_pose"))
    for order in defaults.ALIGN_ORDERS:  # every order the node offers is one the pipeline runs
        assert ("align" in refiner_order(order, 1)) == (order != "off")
    for kind in defaults.HYPOTHESES:
        assert len(hypothesis_rotations(kind)) >= 1


def test_one_default_per_setting_for_the_library_the_cli_and_the_node():
    """PipelineConfig, dsc-pose-predict and the node's parameters take their defaults from
    dsc_pose_core.defaults, which imports nothing (the launch file reads it)."""
    import subprocess
    import sys

    from dsc_pose_core import defaults
    from dsc_pose_core.align import AlignConfig
    from dsc_pose_core.pipeline import PipelineConfig
    from dsc_pose_core.predict_cli import build_parser
    from dsc_pose_ros import params

    config, args = PipelineConfig(), build_parser().parse_args(["--dataset", "d", "--scene", "1", "--out", "o"])
    assert (config.init, config.refine_iterations, AlignConfig().hypotheses) == \
        (args.init, args.refine, args.align_hypotheses) == (defaults.INIT, defaults.REFINE_ITERATIONS,
                                                            defaults.ALIGN_HYPOTHESES)
    node = {p.name: p.default for p in params.PARAMETERS}
    assert (node["init"], node["refine_iterations"], node["align"], node["align_hypotheses"]) == \
        (defaults.INIT, defaults.REFINE_ITERATIONS, defaults.ALIGN, defaults.ALIGN_HYPOTHESES) == \
        (args.init, args.refine, args.align, args.align_hypotheses)
    loaded = subprocess.run([sys.executable, "-c", "import sys, dsc_pose_ros.params; "
                             "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"],
                            capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_every_predict_flag_is_a_field_of_the_typed_job():
    """The chain runs predictions from a PredictJob; the command line fills the same fields, by name."""
    from dataclasses import fields

    from dsc_pose_core.predict_cli import PredictJob, build_parser, job_from_args

    dests = {a.dest for a in build_parser()._actions if a.dest != "help"}
    assert dests == {f.name for f in fields(PredictJob)}
    job = job_from_args(build_parser().parse_args(["--dataset", "d", "--scene", "2", "--out", "r.csv",
                                                    "--obj-ids", "1,5", "--refine", "0", "--split", "val"]))
    assert job == PredictJob(dataset="d", scene=2, out="r.csv", obj_ids=[1, 5], refine=0, split="val")


def test_every_viz_flag_is_a_field_of_the_typed_job():
    """The chain draws overlays from an OverlayJob; the command line fills the same fields, by name."""
    from dataclasses import fields

    from dsc_pose_core.viz.cli import OverlayJob, build_parser, job_from_args

    dests = {a.dest for a in build_parser()._actions if a.dest != "help"}
    assert dests == {f.name for f in fields(OverlayJob)}
    job = job_from_args(build_parser().parse_args(["--dataset", "d", "--scene", "2", "--split-name", "val",
                                                    "--im-ids", "1,5", "--out", "o", "--masks"]))
    assert job == OverlayJob(out="o", dataset="d", scene=2, split_name="val", im_ids=[1, 5], masks=True)
