"""Oracle components for end-to-end checks without real weights.

``ColorEncoder`` turns each 14x14 patch into a radial-basis embedding of its mean colour against a
set of anchor colours (the classes', the distractors' and greys), so patches of one class are
near-parallel and patches of different classes (or background) are near-orthogonal.
``ColorProposer`` proposes the connected components of every anchor colour (which include the
true object masks), plus junk proposals (the whole image, unions of objects, random boxes).
Both follow the contracts of ``no_time_to_train.pipeline.segmenter``; the proposers are registered
through the public registry (``model_cfg.proposer: color_oracle`` / ``no_mask``, their options in
``model_cfg.proposer_args``), as a user's own proposer would be.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from no_time_to_train.cli.lightning_module import Sam2MatcherLightningModel
from no_time_to_train.models.proposals import Proposals
from no_time_to_train.proposers import ProposerPlugin, register_proposer

GREYS = [(g, g, g) for g in range(40, 241, 25)]


class ColorEncoder(nn.Module):
    def __init__(self, anchors_rgb: list, img_size: int = 518, patch: int = 14, sigma: float = 0.12):
        super().__init__()
        self.register_buffer("anchors", torch.tensor(anchors_rgb, dtype=torch.float32) / 255.0)
        self.img_size, self.patch, self.sigma = img_size, patch, sigma
        self.feat_dim = len(anchors_rgb)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(self.img_size, self.img_size), mode="bilinear", antialias=True)
        cols = F.avg_pool2d(x, self.patch).permute(0, 2, 3, 1)  # (B, g, g, 3)
        d2 = ((cols[..., None, :] - self.anchors) ** 2).sum(-1)
        return torch.exp(-d2 / (2 * self.sigma**2))


class ColorProposer(nn.Module):
    image_size = 1024

    def __init__(self, object_colors_rgb: list, tol: float = 60.0, low_res: int = 256, n_junk: int = 4):
        super().__init__()
        self.colors = np.array(object_colors_rgb, dtype=np.float32)
        self.tol, self.low_res, self.n_junk = tol, low_res, n_junk

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> Proposals:
        img = (image[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.float32)  # (S, S, 3)
        dist = np.linalg.norm(img[:, :, None, :] - self.colors[None, None], axis=-1)
        nearest, close = dist.argmin(-1), dist.min(-1) < self.tol
        masks = []
        for c in range(len(self.colors)):
            n, comp = cv2.connectedComponents(((nearest == c) & close).astype(np.uint8))
            masks += [comp == i for i in range(1, n) if (comp == i).sum() > 64]
        true_n = len(masks)
        rng = np.random.default_rng(0)
        s = img.shape[0]
        junk = [np.ones((s, s), bool)]
        if true_n >= 2:
            junk.append(masks[0] | masks[1])
        for _ in range(self.n_junk):
            x1, y1 = rng.integers(0, s // 2, 2)
            w, h = rng.integers(s // 8, s // 2, 2)
            m = np.zeros((s, s), bool)
            m[y1 : y1 + h, x1 : x1 + w] = True
            junk.append(m)
        allm = torch.from_numpy(np.stack(masks + junk)).float()
        # Coverage at the low resolution -> logits whose zero crossing is the sub-pixel boundary.
        cover = F.adaptive_avg_pool2d(allm[:, None], self.low_res)[:, 0]
        logits = (cover - 0.5) * 20.0
        iou = torch.tensor([0.95] * true_n + [0.6] * len(junk))
        return Proposals(logits.to(image.device), iou.to(image.device), torch.zeros(len(iou), 2))


register_proposer(ProposerPlugin(
    "color_oracle", build=lambda cfg: ColorProposer([tuple(c) for c in cfg.proposer_args["colors"]]),
    input_size=lambda cfg: ColorProposer.image_size, summary="connected components of known colours (tests)",
))  # fmt: skip


class OracleMatcherModel(Sam2MatcherLightningModel):
    """The real LightningModule with the colour oracles: the encoder injected, the proposer selected
    from the registry (``color_oracle``)."""

    def __init__(self, *args, class_colors: list[list[int]] | None = None,
                 distractor_colors: list[list[int]] | None = None,
                 confuser_colors: list[list[int]] | None = None, **kwargs):  # fmt: skip
        self.class_colors = [tuple(c) for c in class_colors or []]
        self.distractor_colors = [tuple(c) for c in distractor_colors or []]
        # The encoder tells a confuser's shade from its class's (as a real encoder sees another
        # shape or texture); the proposer does not (it proposes confusers as objects of the class).
        self.confuser_colors = [tuple(c) for c in confuser_colors or []]
        model_cfg = kwargs["model_cfg"] if "model_cfg" in kwargs else args[0]
        model_cfg.proposer = self.proposer_name()
        model_cfg.proposer_args = self.proposer_options()
        super().__init__(*args, **kwargs)

    def proposer_name(self) -> str:
        return "color_oracle"

    def proposer_options(self) -> dict:
        return {"colors": [list(c) for c in self.class_colors + self.distractor_colors]}

    def anchors(self) -> list:
        return self.class_colors + self.distractor_colors + self.confuser_colors + GREYS

    def feature_dim(self) -> int:
        return len(self.anchors())

    def build_encoder(self) -> nn.Module:
        return ColorEncoder(self.anchors())


class _SlowEncoder(nn.Module):
    """Touches ``started`` in the working folder at its first call, then sleeps ``delay`` seconds
    per call: a run that a test can interrupt in the middle of its work."""

    def __init__(self, inner: nn.Module, delay: float):
        super().__init__()
        self.inner, self.delay, self.feat_dim = inner, delay, inner.feat_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        import pathlib
        import time

        pathlib.Path("started").touch()
        time.sleep(self.delay)
        return self.inner(images)


class SlowOracleMatcherModel(OracleMatcherModel):
    def __init__(self, *args, delay: float = 1.0, **kwargs):
        self.delay = delay
        super().__init__(*args, **kwargs)

    def build_encoder(self) -> nn.Module:
        return _SlowEncoder(ColorEncoder(self.anchors()), self.delay)


class NoMaskProposer(nn.Module):
    """No proposal at all (``kind="none"``), or proposals whose masks are all empty ("blank")."""

    image_size = 1024

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, image: torch.Tensor) -> Proposals:
        n = 0 if self.kind == "none" else 5
        logits = torch.full((n, 256, 256), -10.0, device=image.device)
        return Proposals(logits, torch.full((n,), 0.9, device=image.device), torch.zeros(n, 2))


register_proposer(ProposerPlugin(
    "no_mask", build=lambda cfg: NoMaskProposer(cfg.proposer_args["kind"]),
    input_size=lambda cfg: NoMaskProposer.image_size, summary="no usable proposal (tests)",
))  # fmt: skip


class NoMaskModel(OracleMatcherModel):
    """The oracle model whose proposer never yields a usable mask."""

    def __init__(self, *args, proposals: str = "none", **kwargs):
        self.proposals = proposals
        super().__init__(*args, **kwargs)

    def proposer_name(self) -> str:
        return "no_mask"

    def proposer_options(self) -> dict:
        return {"kind": self.proposals}
