"""ImageNet normalisation statistics (RGB, images in [0, 1]), used by DINOv2 and SAM2 alike, and the
encoders' shared input preparation."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def encoder_input(images, size: int, mean, std):  # noqa: ANN001, ANN201 - torch tensors
    """``(B, 3, H, W)`` images in [0, 1] -> normalised ``(B, 3, size, size)`` encoder input.

    Images of another size are resized bicubically (``align_corners=False``, no antialias), then
    ``(x - mean) / std`` with ``mean`` / ``std`` broadcastable ``(1, 3, 1, 1)`` tensors.
    """
    import torch.nn.functional as F

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-2:] != (size, size):
        images = F.interpolate(
            images, size=(size, size), mode="bicubic", align_corners=False, antialias=False
        )
    return (images - mean) / std
