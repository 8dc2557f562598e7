"""The pipeline the package runs when nobody says otherwise, and the names its settings take.

One place for the defaults of :class:`dsc_pose_core.pipeline.PipelineConfig`, ``dsc-pose-predict``
and the pose node's parameters (``dsc_pose_ros/params.py``, which the launch file reads): plain
values, no imports, so that reading them loads neither torch nor the networks.

Chosen by measurement on LM-O ``val`` (docs/BENCHMARKS.md, "Pipelines on LM-O val"): DSC-PoseNet
(AR_MSPD 0.244, ADD(-S) 0.019) over the box initialiser (0.003); DeepIM's two iterations add 0.005
ADD(-S) for a render-and-network pass per iteration, so none by default; the test-time aligner
(ADD(-S) 0.143) costs 150-170 ms per object on 2 CPU cores, so it is opt-in (``align``).
"""

# the names of the pipeline's tables (``pipeline.INITIALISERS``, ``pipeline.refiner_order``,
# ``align.AlignConfig.hypotheses``): a test keeps them equal
INITIALISERS = ("box", "dsc", "self6d", "templates")
ALIGN_ORDERS = ("off", "before", "after")  # where the aligner runs relative to DeepIM
HYPOTHESES = ("none", "flips", "cube24", "templates")  # rotations the aligner tries besides the initial one

INIT = "dsc"  # the initialiser
REFINE_ITERATIONS = 0  # DeepIM iterations per detection (the paper uses 2-4)
ALIGN = "off"  # the test-time aligner: off, before or after DeepIM
ALIGN_HYPOTHESES = "none"
ALIGN_COLOUR = 0.0  # weight of the aligner's vertex-colour term (``AlignConfig.w_colour``)
TEMPLATE_CACHE = "~/.cache/dsc_pose/templates"  # init "templates": rendered template banks kept between starts
SCORE_THRESHOLD = 0.0  # poses with a lower confidence are not published
TRACKING = False  # the previous frame's confident poses start the refiners (``tracking``)
TRACKING_MIN_SCORE = 0.5  # tracking: poses at least this confident continue their track
TRACKING_SMOOTHING = 0.0  # tracking: weight of the previous pose in the published one
