"""Weakly-supervised segmentation from 2D boxes (dsc-posenet sec. 3.1)."""
