"""ImageNet normalisation statistics (RGB, images in [0, 1]): used by DINOv2 and SAM2 alike."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
