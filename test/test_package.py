"""The repository is a valid ament_python ROS 2 package (what `colcon build` reads)."""

from catkin_pkg.package import parse_package


def test_package_xml_is_format_3_ament_python_with_real_dependencies(repo_root):
    package = parse_package(str(repo_root / "package.xml"))
    assert package.package_format == 3
    assert package.name == "dsc_pose_ros"
    assert package.get_build_type() == "ament_python"
    exec_depends = {dep.name for dep in package.exec_depends}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "vision_msgs", "tf2_msgs"} <= exec_depends
    assert (repo_root / "resource" / "dsc_pose_ros").is_file()


def test_setup_installs_marker_launch_and_config(repo_root):
    setup_text = (repo_root / "setup.py").read_text()
    for needle in ("share/ament_index/resource_index/packages", '"launch"', '"config"', "package.xml",
                   "dsc-pose-eval = dsc_pose_core.eval.cli:main"):
        assert needle in setup_text
    assert "install_scripts=$base/lib/dsc_pose_ros" in (repo_root / "setup.cfg").read_text()
