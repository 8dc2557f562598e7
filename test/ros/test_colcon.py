"""A ROS 2 workspace install, as robotics users build packages: ``colcon build`` of this package in a
temporary workspace gives an install space whose ``pose_node``, launch file, ``config/``, default
checkpoints and demo object are found from the install space alone (relative parameters resolve
against its share/dsc_pose_ros), and the installed node answers a frame (issue 30)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ros_helpers import require_ros
from dsc_pose_ros.ros_env import subprocess_env
from dsc_pose_ros.soak import SoakClient, lmo_frames, stop_node

PACKAGE = "dsc_pose_ros"


@pytest.fixture(scope="module")
def install_space(repo_root, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    (ws / "src").mkdir()
    (ws / "src" / PACKAGE).symlink_to(repo_root)
    # the set-up's colcon (requirements-ros.txt, beside this interpreter), else a system ROS's
    colcon = shutil.which("colcon", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert colcon, "colcon is installed by the set-up (requirements-ros.txt) or comes with a system ROS"
    done = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=ws, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return ws / "install" / PACKAGE


def test_the_install_space_holds_the_node_its_launch_file_config_and_defaults(install_space):
    share = install_space / "share" / PACKAGE
    assert (install_space / "lib" / PACKAGE / "pose_node").is_file()
    assert (share / "launch" / "pose.launch.py").is_file() and (share / "package.xml").is_file()
    for name in ("pose.yaml", "lmo.yaml", "objects.yaml", "fastdds.xml", "demo/objects.yaml",
                 "demo/models/obj_000001.ply", "demo/models/models_info.json"):
        assert (share / "config" / name).is_file(), name
    assert (share / "checkpoints" / "demo" / "dsc_posenet" / "obj_000001.pt").is_file()
    assert (share / "checkpoints" / "dsc_posenet" / "obj_000005.pt").is_file()
    assert (install_space.parents[1] / "install" / "setup.sh").is_file()


def test_the_installed_node_starts_from_the_install_space_and_answers_a_frame(install_space, lmo_root,
                                                                               ros_session_env, tmp_path):
    rclpy = require_ros("rclpy")
    require_ros("vision_msgs.msg")
    env = subprocess_env()
    site = next((install_space / "lib").glob("python3*/site-packages"))
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(install_space), env.get("AMENT_PREFIX_PATH", "")]).rstrip(os.pathsep)
    log_path = tmp_path / "node.log"
    log = open(log_path, "w")
    # no parameters at all, run outside the checkout: every default must come from the install space
    proc = subprocess.Popen([str(install_space / "lib" / PACKAGE / "pose_node")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(tmp_path))
    proc.log_file, proc.log_path = log, log_path
    rclpy.init()
    frames = lmo_frames(lmo_root, 1)
    frames[0]["dets"] = [d for d in frames[0]["dets"] if d[0] == 1]  # class 1: the demo object's id
    client = SoakClient(rclpy, frames)
    try:
        assert client.spin_until(client.connected, 120), log_path.read_text()[-3000:]
        client.spin_for(1.0)  # discovery settles (best-effort: a frame sent too early may be lost)
        stamps = []
        for _ in range(15):  # a frame every 2 s until one is answered
            stamps.append(client.publish(0))
            if client.spin_until(lambda: any(s in client.answers for s in stamps), 2.0):
                break
        answered = [s for s in stamps if s in client.answers]
        assert answered, log_path.read_text()[-3000:]
        assert client.n_detections[answered[0]] == 1
    finally:
        client.close()
        rclpy.try_shutdown()
        stop_node(proc)
    text = log_path.read_text()
    assert f"registry {install_space / 'share' / PACKAGE / 'config' / 'demo' / 'objects.yaml'}" in text, text[-3000:]
