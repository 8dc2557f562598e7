"""DeepIM (deepim, ECCV 2018): iterative render-and-compare pose refinement.

``zoom``: the zoom-in window and crops (sec. 3.1, appendix A eq. 6); ``flow``: optical-flow targets
from renders (auxiliary loss, sec. 4.1); ``noise``: initial-pose noise for training (appendix B.1);
``inputs``: the 8-channel network input built with the fast renderer; ``refiner``: inference
(sec. 3.5). The box initialiser (a coarse pose from a 2D box) is ``dsc_pose_core.box_initialiser``. The network is ``models.deepim``, the
trainer ``training.deepim``.
"""

from .flow import flow_from_renders
from .noise import PoseNoiseConfig, sample_pose_noise
from .refiner import DeepImRefiner
from .zoom import ZoomConfig, zoom_window

__all__ = [
    "flow_from_renders", "PoseNoiseConfig", "sample_pose_noise",
    "DeepImRefiner", "ZoomConfig", "zoom_window",
]
