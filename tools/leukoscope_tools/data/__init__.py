"""Data sets: the photo index and split table, the cell set, annotations, cached arrays,
augmentation, the eyepiece simulator."""
