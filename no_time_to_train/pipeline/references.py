"""Reference instances -> memory bank: the one implementation behind ``fill_memory`` and
``postprocess_memory`` (CLI), ``FewShotSegmenter.add_reference`` / ``build_memory`` (API) and
``segment_image``.

Crop rules (method-spec §6.2), in one place:

* the crop window is a square of side ``max(w, h) * (1 + context_ratio)`` centred on the
  instance's box and clipped to the image (``crop_window``);
* the box is the instance's annotation box when one is given (``fill_memory``: the COCO ``bbox``;
  API: ``boxes=`` given together with ``masks=``), otherwise the tight box of the mask;
* the crop is resized to ``crop_size x crop_size`` (bicubic image, bilinear mask), where
  ``crop_size`` is the encoder's input size (``encoder_cfg.img_size``, which
  ``dataset_cfgs.fill_memory.image_size`` must equal);
* the mask is sampled on the encoder's patch grid (``ReferenceSegmenter.encode_references``) and
  only the foreground patches are kept, in half precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from no_time_to_train.config import InferenceCfg
from no_time_to_train.models.matching import masks_to_boxes
from no_time_to_train.models.memory_bank import MemoryBank
from no_time_to_train.pipeline.segmenter import ReferenceSegmenter


@dataclass
class ReferenceEntry:
    """One encoded reference instance: ``feats (P, D)`` float16 and ``weights (P,)`` of its
    foreground patches (P may be 0 when the mask misses every patch)."""

    class_idx: int
    feats: torch.Tensor
    weights: torch.Tensor

    @property
    def is_empty(self) -> bool:
        return float(self.weights.sum()) <= 0


def crop_window(
    box_xywh: Sequence[float], img_w: int, img_h: int, context_ratio: float
) -> tuple[int, int, int, int]:
    """Square window around a box, ``max(w, h) * (1 + context_ratio)`` wide, centred on the box and
    clipped to the image (so it may end up non-square). Returns ``(x1, y1, x2, y2)``, exclusive end."""
    x, y, w, h = box_xywh
    bx1, by1, bx2, by2 = int(x), int(y), int(x + w), int(y + h)
    cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
    half = max(bx2 - bx1, by2 - by1, 1) * (1 + context_ratio) / 2
    x1, y1 = max(0, int(cx - half)), max(0, int(cy - half))
    x2, y2 = min(img_w, int(cx + half)), min(img_h, int(cy + half))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def mask_box_xywh(mask: torch.Tensor) -> list[float] | None:
    """Tight COCO-style box ``[x, y, w, h]`` of a ``(H, W)`` mask (pixel edges), None if empty."""
    if not mask.any():
        return None
    x1, y1, x2, y2 = masks_to_boxes(mask[None].bool())[0].tolist()  # inclusive pixel XYXY
    return [x1, y1, x2 + 1 - x1, y2 + 1 - y1]


def make_reference_crop(
    image: torch.Tensor, mask: torch.Tensor, box_xywh: Sequence[float], context_ratio: float, size: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
    """Crop a reference instance and squash it to ``size x size``.

    Args:
        image: ``(3, H, W)`` in [0, 1]; mask: ``(H, W)`` {0, 1}; box_xywh: the instance's box.
    Returns:
        image ``(3, size, size)`` (bicubic), mask ``(size, size)`` in [0, 1] (bilinear, so soft at
        the edges), and the crop window ``(x1, y1, x2, y2)``.
    """
    x1, y1, x2, y2 = crop_window(box_xywh, image.shape[2], image.shape[1], context_ratio)
    crop = image[:, y1:y2, x1:x2]
    mcrop = mask[y1:y2, x1:x2].float()
    out = F.interpolate(crop[None], size=(size, size), mode="bicubic", align_corners=False)[0]
    mout = F.interpolate(mcrop[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return out, mout, (x1, y1, x2, y2)


def encode_crop(
    segmenter: ReferenceSegmenter, crop: torch.Tensor, mask: torch.Tensor, class_idx: int
) -> ReferenceEntry:
    """Encode one reference crop (``crop (3, S, S)``, ``mask (S, S)``, on the segmenter's device)."""
    feats, weights = segmenter.encode_references(crop[None], mask[None])
    fg = weights[0] > 0
    # Only foreground patches matter downstream; ship them in half precision.
    return ReferenceEntry(class_idx, feats[0][fg].to("cpu", torch.float16), weights[0][fg].cpu())


def encode_reference(
    segmenter: ReferenceSegmenter,
    image: torch.Tensor,
    mask: torch.Tensor,
    class_idx: int,
    box_xywh: Sequence[float] | None,
    context_ratio: float,
    crop_size: int,
    device: torch.device | str = "cpu",
) -> ReferenceEntry:
    """Crop (by the rules above) and encode one reference instance of ``image (3, H, W)``;
    ``device`` is the encoder's."""
    box = list(box_xywh) if box_xywh is not None else mask_box_xywh(mask)
    if box is None:
        return ReferenceEntry(class_idx, torch.zeros(0, 0, dtype=torch.float16), torch.zeros(0))
    crop, mcrop, _ = make_reference_crop(image, mask, box, context_ratio, crop_size)
    return encode_crop(segmenter, crop.to(device), mcrop.to(device), class_idx)


def slots_in_order(class_idx: Sequence[int]) -> list[int]:
    """Slot of each entry within its class, in order of appearance (0, 1, ... per class)."""
    seen: dict[int, int] = {}
    slots = []
    for c in class_idx:
        slots.append(seen.get(c, 0))
        seen[c] = slots[-1] + 1
    return slots


def fill_bank(
    bank: MemoryBank, entries: Sequence[ReferenceEntry], slots: Sequence[int] | None = None
) -> None:
    """Write encoded entries into an empty bank (``slots`` default: order of appearance per class)."""
    classes = [e.class_idx for e in entries]
    slots = list(slots) if slots is not None else slots_in_order(classes)
    bank.fill_packed(
        torch.tensor(classes, dtype=torch.long),
        torch.tensor(slots, dtype=torch.long),
        [e.feats for e in entries],
        [e.weights for e in entries],
    )


def empty_bank(num_classes: int, length: int, feat_dim: int, infer: InferenceCfg | None = None) -> MemoryBank:
    """An empty bank of ``num_classes`` x ``length`` slots of ``feat_dim`` features, with the
    statistics settings (k-means centres, PCA components) of ``sam2_infer_cfgs``."""
    infer = infer or InferenceCfg()
    return MemoryBank(num_classes, length, feat_dim, infer.kmeans_k, infer.n_pca_components)


def build_bank(
    entries: Sequence[ReferenceEntry],
    num_classes: int,
    feat_dim: int,
    infer: InferenceCfg | None = None,
    length: int | None = None,
) -> MemoryBank:
    """A filled and postprocessed bank of ``num_classes`` classes from encoded entries;
    ``length`` defaults to the largest number of entries of one class."""
    counts = torch.bincount(torch.tensor([e.class_idx for e in entries]), minlength=num_classes)
    bank = empty_bank(num_classes, length or int(counts.max()), feat_dim, infer)
    fill_bank(bank, entries)
    bank.postprocess()
    return bank
