"""Networks: the image trunks (``backbone``), the segmentation network, DSC-PoseNet, DeepIM, Self6D."""
