"""Box-prompted segmentation: images + XYXY boxes -> one binary mask per box, with SAM2's
official image predictor or a SAM (v1) model. Built by ``checkpoints.sam_box``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

MAX_BOXES_PER_CALL = 64
"""Box prompts per mask-decoder call: bounds the memory of the full-resolution masks."""


class BoxPromptSegmenter(Protocol):
    def segment(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``images``: RGB uint8 ``(H_i, W_i, 3)``; ``boxes``: float ``(N_i, 4)`` XYXY pixels (N_i >= 1).

        Returns one bool array ``(N_i, H_i, W_i)`` per image.
        """
        ...


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


class Sam2BoxSegmenter:
    """Box prompts through the official ``SAM2ImagePredictor`` (one mask per box).

    Images holding at most ``max_boxes_per_call`` boxes are encoded together
    (``set_image_batch`` / ``predict_batch``); an image with more boxes is encoded alone and its
    boxes are decoded in chunks.
    """

    def __init__(self, sam2_model: torch.nn.Module, max_boxes_per_call: int = MAX_BOXES_PER_CALL) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        with warnings.catch_warnings():  # sam2's transforms use torch.jit.script, deprecated in torch 2.x
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            self.predictor = SAM2ImagePredictor(sam2_model)
        self.max_boxes_per_call = max_boxes_per_call

    @staticmethod
    def _as_masks(masks: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
        # predict() drops the leading axis for a single box: (1, H, W) vs (N, 1, H, W).
        return np.asarray(masks).reshape(n, -1, h, w)[:, 0] > 0.5

    def segment(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * len(images)
        small = [i for i, b in enumerate(boxes) if len(b) <= self.max_boxes_per_call]
        if small:
            self.predictor.set_image_batch([images[i] for i in small])
            masks, _, _ = self.predictor.predict_batch(
                box_batch=[np.asarray(boxes[i], np.float32) for i in small], multimask_output=False
            )
            for i, m in zip(small, masks, strict=True):
                out[i] = self._as_masks(m, len(boxes[i]), *images[i].shape[:2])
        for i in (i for i in range(len(images)) if out[i] is None):
            h, w = images[i].shape[:2]
            self.predictor.set_image(images[i])
            result = np.zeros((len(boxes[i]), h, w), bool)
            for part in _chunks(len(boxes[i]), self.max_boxes_per_call):
                chunk = np.asarray(boxes[i][part], np.float32)
                m, _, _ = self.predictor.predict(box=chunk, multimask_output=False)
                result[part] = self._as_masks(m, len(chunk), h, w)
            out[i] = result
        self.predictor.reset_predictor()
        return out  # type: ignore[return-value]


class Sam1BoxSegmenter:
    """Box prompts through a ``segment_anything`` ``Sam`` model, batched like ``Sam.forward``.

    The images of a call are encoded in one batch (longest side resized to 1024, padded); each
    image's boxes are then decoded in chunks of ``max_boxes_per_call``.
    """

    def __init__(self, sam_model: torch.nn.Module, max_boxes_per_call: int = MAX_BOXES_PER_CALL) -> None:
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.max_boxes_per_call = max_boxes_per_call

    @torch.no_grad()
    def segment(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        sam = self.sam
        device = sam.device
        inputs = [
            torch.as_tensor(self.transform.apply_image(img), device=device).permute(2, 0, 1).contiguous()
            for img in images
        ]
        embeddings = sam.image_encoder(torch.stack([sam.preprocess(x) for x in inputs]))
        dense_pe = sam.prompt_encoder.get_dense_pe()
        out = []
        for i, (img, img_boxes) in enumerate(zip(images, boxes, strict=True)):
            h, w = img.shape[:2]
            result = np.zeros((len(img_boxes), h, w), bool)
            for part in _chunks(len(img_boxes), self.max_boxes_per_call):
                chunk = torch.as_tensor(np.asarray(img_boxes[part]), dtype=torch.float, device=device)
                sparse, dense = sam.prompt_encoder(
                    points=None, boxes=self.transform.apply_boxes_torch(chunk, (h, w)), masks=None
                )
                low_res, _ = sam.mask_decoder(
                    image_embeddings=embeddings[i : i + 1],
                    image_pe=dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=False,
                )
                full = sam.postprocess_masks(
                    low_res, input_size=tuple(inputs[i].shape[-2:]), original_size=(h, w)
                )
                result[part] = (full[:, 0] > sam.mask_threshold).cpu().numpy()
            out.append(result)
        return out
