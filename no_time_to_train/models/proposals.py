"""Class-agnostic mask proposals from SAM2 prompted with a regular point grid (method-spec §4.2).

Only SAM2's image encoder, prompt encoder and mask decoder are used, driven here directly: one
positive point per prompt, best of the three multimask outputs by predicted IoU, and a predicted-IoU
filter. The decoder is run with the official modules' weights; ``fast=True`` reorders the work so
that nothing is computed for prompts that the IoU filter drops (see ``_decode``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Proposals:
    """``logits`` (N, s, s) low-resolution mask logits (s = 256 for SAM2); ``iou`` (N,) SAM2's
    predicted IoU of each kept proposal; ``points`` (N, 2) the prompt (x, y) in the input frame."""

    logits: torch.Tensor
    iou: torch.Tensor
    points: torch.Tensor

    def __len__(self) -> int:
        return self.iou.shape[0]


def point_grid(points_per_side: int, image_size: int) -> torch.Tensor:
    """``(n*n, 2)`` (x, y) prompts: ``linspace(0, S-1, n) + 0.5`` on both axes, x varying fastest."""
    ticks = torch.linspace(0, image_size - 1, points_per_side) + 0.5
    ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


class Sam2PointGridProposer(nn.Module):
    """Wraps an official ``SAM2Base`` (built by ``models.encoders.build_sam2``)."""

    def __init__(
        self,
        sam2: nn.Module,
        points_per_side: int = 32,
        point_batch_size: int = 256,
        iou_thr: float = 0.4,
        add_no_mem_embed: bool = False,
        fast: bool = True,
        upscale_batch_size: int = 32,
    ):
        super().__init__()
        self.sam2 = sam2
        self.points_per_side = points_per_side
        self.point_batch_size = point_batch_size
        self.iou_thr = iou_thr
        self.add_no_mem_embed = add_no_mem_embed
        self.fast = fast
        self.upscale_batch_size = upscale_batch_size
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return int(self.sam2.image_size)

    # ------------------------------------------------------------------ image features
    def image_features(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``image`` (1, 3, S, S) in [0, 1] -> image embedding (1, 256, 64, 64) and the two
        high-resolution feature maps (1, 32, 256, 256), (1, 64, 128, 128)."""
        x = (image - self.pixel_mean) / self.pixel_std
        backbone_out = self.sam2.forward_image(x)
        _, vision_feats, _, feat_sizes = self.sam2._prepare_backbone_features(backbone_out)
        if self.add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.sam2.no_mem_embed
        feats = [f.permute(1, 2, 0).reshape(1, -1, *size) for f, size in zip(vision_feats, feat_sizes)]
        return feats[-1], feats[:-1]

    # ------------------------------------------------------------------ proposals
    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> Proposals:
        """``image`` (1, 3, S, S) float in [0, 1], S = SAM2's input size (1024)."""
        if image.shape[-1] != self.image_size or image.shape[-2] != self.image_size:
            raise ValueError(f"expected a {self.image_size}x{self.image_size} image, got {tuple(image.shape)}")
        embed, high_res = self.image_features(image)
        grid = point_grid(self.points_per_side, self.image_size).to(image.device)
        logits, ious, points = [], [], []
        for i in range(0, grid.shape[0], self.point_batch_size):
            pts = grid[i : i + self.point_batch_size]
            lg, iou, kept = self._decode(embed, high_res, pts)
            logits.append(lg)
            ious.append(iou)
            points.append(pts[kept])
        return Proposals(torch.cat(logits), torch.cat(ious), torch.cat(points))

    def _prompt_embeddings(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        # No box, so the prompt encoder appends its padding point (label -1) to each prompt.
        sparse, dense = self.sam2.sam_prompt_encoder(points=(points[:, None, :], labels), boxes=None, masks=None)
        return sparse, dense[:1]  # the dense (no-mask) embedding is the same for every prompt

    def _decode(
        self, embed: torch.Tensor, high_res: list[torch.Tensor], points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Best-of-3 mask logits and IoU for the prompts whose predicted IoU > ``iou_thr``.

        Returns ``(logits (n, s, s), iou (n,), kept (B,) bool)``.
        """
        sparse, dense = self._prompt_embeddings(points)
        decoder = self.sam2.sam_mask_decoder
        image_pe = self.sam2.sam_prompt_encoder.get_dense_pe()
        if not self.fast:
            masks, iou, _, _ = decoder(
                image_embeddings=embed,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
                repeat_image=True,
                high_res_features=high_res,
            )
            best_iou, best = iou.max(dim=1)
            kept = best_iou > self.iou_thr
            chosen = masks[torch.arange(masks.shape[0], device=masks.device), best]
            return chosen[kept], best_iou[kept], kept
        return self._decode_fast(decoder, embed, image_pe, sparse, dense, high_res)

    def _decode_fast(self, decoder, embed, image_pe, sparse, dense, high_res):  # noqa: ANN001
        """The official ``MaskDecoder.predict_masks`` computation, reordered.

        The two-way transformer must run per prompt (its image tokens are updated by each prompt's
        tokens), but the IoU head needs only the transformer's IoU token. So: transformer -> IoU
        -> filter -> upscaling and hypernetwork only for the kept prompts and only for the chosen
        mask token. Outputs equal the official path within float noise.
        """
        b = sparse.shape[0]
        s = 1 if decoder.pred_obj_scores else 0
        weights = [decoder.iou_token.weight, decoder.mask_tokens.weight]
        if s:
            weights.insert(0, decoder.obj_score_token.weight)
        tokens = torch.cat([torch.cat(weights, dim=0)[None].expand(b, -1, -1), sparse], dim=1)
        src = (embed + dense).expand(b, -1, -1, -1)
        pos = image_pe.expand(b, -1, -1, -1)
        hs, src_out = decoder.transformer(src, pos, tokens)
        iou = decoder.iou_prediction_head(hs[:, s, :])  # (B, num_mask_tokens); sigmoid inside if configured
        best_iou, best = iou[:, 1:].max(dim=1)
        best = best + 1  # multimask outputs are tokens 1..3
        kept = best_iou > self.iou_thr
        idx = kept.nonzero(as_tuple=True)[0]
        c, h, w = embed.shape[1:]
        mask_tokens_out = hs[:, s + 1 : s + 1 + decoder.num_mask_tokens, :]
        out = []
        for i in range(0, idx.numel(), self.upscale_batch_size):
            sel = idx[i : i + self.upscale_batch_size]
            x = src_out[sel].transpose(1, 2).reshape(sel.numel(), c, h, w)
            if decoder.use_high_res_features:
                dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
                feat_s0, feat_s1 = high_res
                up = act2(dc2(act1(ln1(dc1(x) + feat_s1))) + feat_s0)
            else:
                up = decoder.output_upscaling(x)
            hyper = _hypernetwork(decoder, mask_tokens_out[sel], best[sel])
            n, cu, hu, wu = up.shape
            out.append(torch.bmm(hyper[:, None, :], up.reshape(n, cu, hu * wu)).reshape(n, hu, wu))
        if out:
            logits = torch.cat(out)
        else:
            logits = embed.new_zeros((0, 4 * h, 4 * w))
        return logits, best_iou[kept], kept


def _hypernetwork(decoder, mask_tokens_out: torch.Tensor, token_idx: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """Hypernetwork weights (n, c) of the chosen mask token of each prompt, grouped by token."""
    out = mask_tokens_out.new_empty((token_idx.numel(), decoder.output_hypernetworks_mlps[0].layers[-1].out_features))
    for t in token_idx.unique().tolist():
        rows = (token_idx == t).nonzero(as_tuple=True)[0]
        out[rows] = decoder.output_hypernetworks_mlps[t](mask_tokens_out[rows, t])
    return out
