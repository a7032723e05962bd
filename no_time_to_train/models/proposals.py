"""The proposer contract: what every class-agnostic mask proposer returns and exposes.

A proposer is an ``nn.Module`` called as ``proposer(image) -> Proposals`` with ``image``
``(1, 3, S, S)`` float in [0, 1], ``S = proposer.image_size`` (the target is squashed to it), and
its proposals already filtered by its own quality score. It may expose ``on_batch`` (a callable
receiving the number of prompts of each finished batch; progress bars). Proposers are registered
by name in :mod:`no_time_to_train.proposers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Proposals:
    """``logits`` (N, s, s) low-resolution mask logits (s = 256 for SAM2); ``iou`` (N,) the
    proposer's predicted IoU of each kept proposal; ``points`` (N, 2) the prompt (x, y) in the
    input frame."""

    logits: torch.Tensor
    iou: torch.Tensor
    points: torch.Tensor

    def __len__(self) -> int:
        return self.iou.shape[0]


@runtime_checkable
class Proposer(Protocol):
    """What :class:`~no_time_to_train.pipeline.segmenter.ReferenceSegmenter` calls."""

    image_size: int
    """Side S of the square input the proposer takes."""

    def __call__(self, image: torch.Tensor) -> Proposals: ...
