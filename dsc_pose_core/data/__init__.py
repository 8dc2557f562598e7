"""Data: BOP files, synthetic renders, 2D boxes, training crops and their augmentation."""
