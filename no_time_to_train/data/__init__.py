"""COCO-format data: loading and validation, images, datasets, class splits, reference sets."""
