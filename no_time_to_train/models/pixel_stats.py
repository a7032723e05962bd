"""Pixel normalisation statistics (RGB, images in [0, 1]) and the encoders' shared input preparation.

ImageNet's are used by SAM2, DINOv2, DINOv3 and PE (as the reference), CLIP's by CLIP, and Meta's
SAT-493M statistics are available for the DINOv3 satellite models (``encoder_cfg.pixel_stats: sat``).
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SAT_MEAN = (0.430, 0.411, 0.296)  # Meta's statistics of SAT-493M (DINOv3 satellite models)
SAT_STD = (0.213, 0.156, 0.143)

PIXEL_STATS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "clip": (CLIP_MEAN, CLIP_STD),
    "sat": (SAT_MEAN, SAT_STD),
}
"""The choices of ``encoder_cfg.pixel_stats`` (besides "default", the family's)."""


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
