"""Trainers and their infrastructure: one trainer per method (segmentation, DSC-PoseNet, DeepIM, Self6D),
the stage chain, strict YAML configs, atomic weights-only checkpoints, DDP and TensorBoard logging.
Inference (``dsc_pose_core.pipeline``) does not need this package."""
