"""Build timm-based encoders from their official files, strictly (the helpers the DINOv3, CLIP and
Perception Encoder families of ``no_time_to_train.encoders`` share).

timm converts each official layout (its checkpoint filters: Meta's DINOv3 ``.pth``, OpenAI's CLIP
state dict with ``visual.*`` keys, Meta's PE ``.pt``) and loads it with every key and shape
checked; any failure becomes a :class:`CheckpointError` naming the file, the encoder and where the
official file comes from. ``ckpt_path=None`` gives random weights (tests, timing).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from no_time_to_train.checkpoints.loading import brief, read_checkpoint, require_file
from no_time_to_train.errors import CheckpointError
from no_time_to_train.models.vit_encoders import ZooEncoder


def create_timm(timm_name: str, path: Path | None, **kwargs) -> nn.Module:  # noqa: ANN003
    """timm's model ``timm_name``; with ``path``, the official file through timm's checkpoint filter
    (``pretrained_cfg_overlay``: a local file, no download)."""
    import timm

    if path is None:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    return timm.create_model(
        timm_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
    )


def build_timm_encoder(name: str, path: Path | None, img_size: int, mean: tuple, std: tuple,
                       create: Callable[[], nn.Module],
                       tokens: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                       l2_normalize: bool = False) -> ZooEncoder:  # fmt: skip
    """A frozen :class:`ZooEncoder` around the timm model ``create()`` returns (it loads ``path``);
    a failure to load becomes a CheckpointError naming the file, the encoder and its source."""
    from no_time_to_train.encoders import encoder_spec

    spec = encoder_spec(name)
    what = f"{name} encoder"
    if path is not None:
        require_file(path, what, spec.download)
    try:
        vit = create()
    except Exception as err:
        if path is None:
            raise
        read_checkpoint(path, what, spec.download)  # raises for unreadable files
        raise CheckpointError(
            f"{what} checkpoint {path} does not match {name} ({spec.timm_name}, width {spec.feat_dim}, "
            f"{spec.depth} blocks). timm reported: {brief(err).rstrip('.')}. {spec.download}"
        ) from err
    vit.eval()
    vit.requires_grad_(False)
    encoder = ZooEncoder(vit, img_size, spec.patch_size, mean, std, tokens=tokens, l2_normalize=l2_normalize)
    encoder.eval()
    return encoder
