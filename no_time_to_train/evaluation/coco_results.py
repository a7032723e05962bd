"""COCO result records: the one RLE encoder, per-image result dicts, and gathering them across
the ranks of a multi-process run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.distributed as dist


def encode_rle(mask: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """COCO compressed RLE of one ``(H, W)`` mask: ``{"size": [H, W], "counts": str}`` (json-ready)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def encode_detections(
    masks: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
    image_id: int | str, cat_inds_to_ids: dict[int, int],
) -> list[dict[str, Any]]:  # fmt: skip
    """COCO result dicts for one image.

    ``boxes`` are inclusive pixel XYXY; the COCO box is ``[x1, y1, x2 - x1, y2 - y1]``, exactly as
    the reference writes it (so its bbox numbers are reproduced). ``segmentation`` is an RLE with
    ``counts`` as str; ``category_id`` is the real COCO id of the class index.
    """
    if len(scores) == 0:
        return []
    # One mask at a time: a (H, W, N) copy of 100 masks of a 24-megapixel photo would take 2.4 GB.
    rles = [encode_rle(m) for m in masks]
    b = boxes.detach().cpu().double().numpy()
    out = []
    for i, (rle, s, c) in enumerate(zip(rles, scores.tolist(), labels.tolist(), strict=True)):
        x1, y1, x2, y2 = b[i].tolist()
        out.append({
            "image_id": image_id,
            "category_id": int(cat_inds_to_ids[int(c)]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(s),
            "segmentation": rle,
        })  # fmt: skip
    return out


def gather_indexed(local: list[tuple[int, Any]]) -> list[Any]:
    """Gather ``(dataset_index, payload)`` pairs from every rank; payloads in dataset order.

    Duplicates (the distributed sampler pads the last batch by repeating indices) are dropped.
    Works for any world size, on gloo (CPU) and nccl; without torch.distributed it just sorts.
    """
    items = list(local)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list[list[tuple[int, Any]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, items)
        items = [x for part in parts for x in (part or [])]
    seen: dict[int, Any] = {}
    for idx, payload in items:
        seen.setdefault(int(idx), payload)
    return [seen[i] for i in sorted(seen)]
