import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dsc_pose_ros"


def _tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing ``folder`` (files of every sub-folder) under share/PACKAGE."""
    entries = []
    for root, _, files in sorted(os.walk(folder)):
        if files:
            entries.append((os.path.join("share", PACKAGE, root), sorted(os.path.join(root, f) for f in files)))
    return entries

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["dsc_pose_core", "dsc_pose_core.*", "dsc_pose_ros", "dsc_pose_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [os.path.join("resource", PACKAGE)]),
        (os.path.join("share", PACKAGE), ["package.xml"]),
        (os.path.join("share", PACKAGE, "launch"), glob("launch/*.py")),
        (os.path.join("share", PACKAGE, "config"), glob("config/*.yaml") + glob("config/*.xml")),
        # the node's defaults (the demo object) and every committed checkpoint: an install space needs no
        # source checkout (dsc_pose_ros.params.package_root resolves relative paths against share/)
        *_tree("config/demo"), *_tree("checkpoints"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="dsc_pose maintainers",
    maintainer_email="maintainers@dsc-pose.invalid",
    description="Monocular 6D object pose estimation (DSC-PoseNet, Self6D, DeepIM) for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "dsc-pose-eval = dsc_pose_core.eval.cli:main",
            "dsc-pose-synth = dsc_pose_core.data.synth_cli:main",
            "dsc-pose-viz = dsc_pose_core.viz.cli:main",
            "dsc-pose-predict = dsc_pose_core.predict_cli:main",
            "dsc-pose-bag = dsc_pose_ros.bag:main",
            "dsc-pose-node = dsc_pose_ros.node:main",
            "pose_node = dsc_pose_ros.node:main",
            "dsc-pose-demo = dsc_pose_ros.demo:main",
        ],
    },
)
