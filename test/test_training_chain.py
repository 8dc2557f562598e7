"""The stage chain (``training/train.py`` with ``stages:``) on the tiny config: it runs every stage
end to end (synthetic -> segmentation -> DSC-PoseNet -> DeepIM -> eval with report.md), a re-run
skips every stage, a changed setting re-runs that stage and the stages reading its outputs,
``--resume`` continues an interrupted stage from its checkpoint, and TensorBoard logs exist."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from dsc_pose_core.training.demo_data import write_demo_fit_data

ALL = ["synthetic", "segmentation", "dsc_posenet", "deepim", "eval"]


@pytest.fixture(scope="module")
def fit_data(tmp_path_factory):
    return write_demo_fit_data(tmp_path_factory.mktemp("demo_fit"), n_train=4, n_val=2)


def _train(repo_root, fit_data, out, *extra):
    cmd = [sys.executable, str(repo_root / "training" / "train.py"), "--config",
           str(repo_root / "config" / "train" / "tiny_chain.yaml"), "--out", str(out),
           f"data.objects_file={fit_data['registry']}", f"data.dataset={fit_data['dataset']}", *extra]
    done = subprocess.run(cmd, cwd=str(repo_root), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return done


def _stage_lines(stdout: str) -> dict[str, str]:
    """{stage: "skipped" | "running" | "continuing"} from the chain's progress lines."""
    found = {}
    for stage, what in re.findall(r"^\[chain\] (\w+): (up to date|running|continuing)", stdout, re.M):
        found[stage] = "skipped" if what == "up to date" else what
    return found


def test_chain_runs_skips_reruns_changed_stages_and_resumes(repo_root, fit_data, tmp_path):
    out = tmp_path / "chain"
    first = _train(repo_root, fit_data, out)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _stage_lines(first.stdout) == {s: "running" for s in ALL}
    # outputs handed from stage to stage, without any path in the config
    assert (out / "synthetic" / "dataset" / "train_synt" / "000000" / "scene_gt.json").is_file()
    resolved_dsc = (out / "dsc_posenet" / "config.resolved.yaml").read_text()
    assert str(out / "segmentation" / "pseudo" / "iter_1") in resolved_dsc
    assert (out / "dsc_posenet" / "checkpoints" / "obj_000001.pt").is_file()
    report = (out / "report.md").read_text()
    assert "| all |" in report and "AR_MSSD" in report
    pictures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert len(pictures) == 2 and all((out / p).is_file() for p in pictures)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["counts"]["valid_gt"] == 2 and metrics["split"] == "val"
    stamps = {s: json.loads((out / s / "stage_done.json").read_text()) for s in ALL}
    assert stamps["dsc_posenet"]["depends"] == {"synthetic": stamps["synthetic"]["hash"],
                                                "segmentation": stamps["segmentation"]["hash"]}
    # TensorBoard: losses, learning rate and pictures of every trainer
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for tb in (out / "segmentation" / "tb", out / "dsc_posenet" / "obj_000001" / "tb", out / "deepim" / "tb"):
        events = EventAccumulator(str(tb))
        events.Reload()
        tags = events.Tags()
        assert "lr" in tags["scalars"] and any(t.startswith("loss") for t in tags["scalars"]), (tb, tags)
        assert any(t.startswith("sample/") for t in tags["images"]), (tb, tags)

    again = _train(repo_root, fit_data, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _stage_lines(again.stdout) == {s: "skipped" for s in ALL}
    assert json.loads((out / "eval" / "stage_done.json").read_text()) == stamps["eval"]  # untouched

    # a changed segmentation setting: it and its readers re-run; the independent stages do not
    changed = _train(repo_root, fit_data, out, "segmentation.finetune.steps=3")
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert _stage_lines(changed.stdout) == {"synthetic": "skipped", "segmentation": "running",
                                            "dsc_posenet": "running", "deepim": "skipped", "eval": "running"}
    assert json.loads((out / "segmentation" / "results.json").read_text())["iterations"][0]["finetune"]["steps"] == 3
    # bookkeeping keys (how often to log) do not count as a change
    logging_only = _train(repo_root, fit_data, out, "segmentation.finetune.steps=3", "deepim.log_every=3")
    assert _stage_lines(logging_only.stdout) == {s: "skipped" for s in ALL}

    # an interrupted DeepIM stage (no completion stamp, its checkpoint at step 2 of 3) continues
    # with --resume from that checkpoint instead of starting over
    deepim = out / "deepim"
    (deepim / "stage_done.json").unlink()
    (deepim / "checkpoints" / "deepim_step2.pt").replace(deepim / "checkpoints" / "deepim_last.pt")
    (deepim / "checkpoints" / "deepim_step3.pt").unlink()
    resumed = _train(repo_root, fit_data, out, "segmentation.finetune.steps=3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _stage_lines(resumed.stdout)["deepim"] == "continuing"
    assert f"resumed from {deepim / 'checkpoints' / 'deepim_last.pt'} (step 2)" in resumed.stdout
    assert (deepim / "checkpoints" / "deepim_step3.pt").is_file() and (deepim / "stage_done.json").is_file()
    # DeepIM's stamp is the same hash as before, so eval, which reads it, stays up to date
    assert _stage_lines(resumed.stdout)["eval"] == "skipped"


def test_chain_config_errors_are_one_clear_line(repo_root, fit_data, tmp_path):
    out = tmp_path / "chain"
    owned = _train(repo_root, fit_data, out, "dsc_posenet.real.pseudo_dir=elsewhere")
    assert owned.returncode == 2
    assert "dsc_posenet.real.pseudo_dir is set by the chain" in owned.stderr
    unknown = _train(repo_root, fit_data, out, "data.mesh=x.ply")
    assert unknown.returncode == 2 and "unknown key(s) ['mesh']" in unknown.stderr
    order = _train(repo_root, fit_data, out, "stages=[deepim, synthetic]")
    assert order.returncode == 2 and "in the order" in order.stderr
    missing_dependency = _train(repo_root, fit_data, out, "--stages", "eval")
    assert missing_dependency.returncode == 2
    assert "reads the outputs of ['dsc_posenet', 'deepim'], which are not up to date" in missing_dependency.stderr
    resume_path = _train(repo_root, fit_data, out, "--resume", "x.pt")
    assert resume_path.returncode == 2 and "--resume takes no checkpoint" in resume_path.stderr
    assert not (out / "synthetic").exists()  # nothing ran
