"""dsc_pose_core: monocular 6D object pose estimation (DSC-PoseNet, Self6D, DeepIM).

The library never imports ROS; ``dsc_pose_ros`` is the thin ROS 2 layer on top of it.
Units are metres and radians; poses map object -> camera (``R`` 3x3, ``t`` 3).
"""

__version__ = "0.1.0"
