"""Class-agnostic mask proposals from SAM2 prompted with a regular point grid (method-spec §4.2).

Only SAM2's image encoder, prompt encoder and mask decoder are used, driven here directly: one
positive point per prompt, best of the three multimask outputs by predicted IoU, and a predicted-IoU
filter. The decoder is run with the official modules' weights. ``fast=True`` (default) computes the
same numbers with far less work (``models.sam2_fast_decoder``): prompt-independent decoder work once per
image, the transformer's image-side projections folded into the prompt tokens, and mask upscaling
only for the prompts that pass the IoU filter and only for their chosen mask token. ``fast=False``
calls the official ``MaskDecoder.forward`` (every prompt on its own copy of the image tokens); so
does ``fast=True`` with a decoder whose layout ``models.sam2_fast_decoder`` does not know.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import record_function

from no_time_to_train.compat import sam2_prepare_backbone_features
from no_time_to_train.models.pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from no_time_to_train.models.proposals import Proposals
from no_time_to_train.models.sam2_fast_decoder import ImageContext, MultiPromptDecoder, supports
from no_time_to_train.runtime import decoder_chunk


def point_grid(points_per_side: int, image_size: int) -> torch.Tensor:
    """``(n*n, 2)`` (x, y) prompts: ``linspace(0, S-1, n) + 0.5`` on both axes, **x varying slowest**.

    The order is the reference's (``meshgrid`` of (x, y) in ``ij`` indexing): it matters, because
    the NMS keeps the first of two proposals with exactly equal predicted IoU.
    """
    ticks = torch.linspace(0, image_size - 1, points_per_side) + 0.5
    xs, ys = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


class Sam2PointGridProposer(nn.Module):
    """Wraps an official ``SAM2Base`` (built by ``checkpoints.loading.build_sam2``).

    ``point_batch_size`` prompts go through the prompt encoder together (the reference's
    ``testing_point_bs``); the fast decoder then works on ``decoder_chunk`` prompts at a time and
    upscales ``upscale_chunk`` at a time (None: ``runtime.decoder_chunk`` prompts per pass, and
    upscaling one at a time on CPU, where its tensors then stay in cache; 64 and 64 on GPU). Results do not depend on any of them. Each stage runs under a ``torch.profiler.record_function`` label
    (``ntt::sam2_encoder``, ``ntt::decoder_transformer``, ``ntt::iou_filter``, ``ntt::upscaling``),
    which ``scripts/benchmark.py`` reads; outside a profiler they cost nothing measurable.
    """

    def __init__(
        self,
        sam2: nn.Module,
        points_per_side: int = 32,
        point_batch_size: int = 256,
        iou_thr: float = 0.4,
        add_no_mem_embed: bool = False,
        fast: bool = True,
        decoder_chunk: int | None = None,
        upscale_chunk: int | None = None,
    ):
        super().__init__()
        self.sam2 = sam2
        self.points_per_side = points_per_side
        self.point_batch_size = point_batch_size
        self.iou_thr = iou_thr
        self.add_no_mem_embed = add_no_mem_embed
        self.fast = fast
        self.decoder_chunk = decoder_chunk
        self.upscale_chunk = upscale_chunk
        # Called with the number of prompts of each finished batch (progress bars; None: silent).
        self.on_batch: Callable[[int], None] | None = None
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
        vision_feats, feat_sizes = sam2_prepare_backbone_features(self.sam2, backbone_out)
        if self.add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.sam2.no_mem_embed
        feats = [
            f.permute(1, 2, 0).reshape(1, -1, *size) for f, size in zip(vision_feats, feat_sizes, strict=True)
        ]
        return feats[-1], feats[:-1]

    # ------------------------------------------------------------------ proposals
    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> Proposals:
        """``image`` (1, 3, S, S) float in [0, 1], S = SAM2's input size (1024)."""
        if image.shape[-1] != self.image_size or image.shape[-2] != self.image_size:
            raise ValueError(
                f"expected a {self.image_size}x{self.image_size} image, got {tuple(image.shape)}"
            )
        with record_function("ntt::sam2_encoder"):
            embed, high_res = self.image_features(image)
        grid = point_grid(self.points_per_side, self.image_size).to(image.device)
        ctx = self._image_context(embed, high_res) if self._use_fast() else None
        logits, ious, points = [], [], []
        for i in range(0, grid.shape[0], self.point_batch_size):
            pts = grid[i : i + self.point_batch_size]
            lg, iou, kept = self._decode(embed, high_res, pts, ctx)
            logits.append(lg)
            ious.append(iou)
            points.append(pts[kept])
            if self.on_batch is not None:
                self.on_batch(len(pts))
        return Proposals(torch.cat(logits), torch.cat(ious), torch.cat(points))

    def _prompt_embeddings(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        # No box, so the prompt encoder appends its padding point (label -1) to each prompt.
        sparse, dense = self.sam2.sam_prompt_encoder(
            points=(points[:, None, :], labels), boxes=None, masks=None
        )
        return sparse, dense[:1]  # the dense (no-mask) embedding is the same for every prompt

    def _use_fast(self) -> bool:
        return self.fast and supports(self.sam2.sam_mask_decoder)

    def _image_context(self, embed: torch.Tensor, high_res: list[torch.Tensor]) -> ImageContext:
        with record_function("ntt::decoder_transformer"):
            pe = self.sam2.sam_prompt_encoder.get_dense_pe()
            dense = self.sam2.sam_prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            return MultiPromptDecoder(self.sam2.sam_mask_decoder).prepare(embed, pe, dense, high_res)

    def _decode(
        self,
        embed: torch.Tensor,
        high_res: list[torch.Tensor],
        points: torch.Tensor,
        ctx: ImageContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Best-of-3 mask logits and IoU for the prompts whose predicted IoU > ``iou_thr``.

        ``points`` (B, 2); ``ctx``: the fast decoder's per-image context (made here if None).
        Returns ``(logits (n, s, s), iou (n,), kept (B,) bool)``.
        """
        if not self._use_fast():
            return self._decode_official(embed, high_res, points)
        if ctx is None:
            ctx = self._image_context(embed, high_res)
        with record_function("ntt::decoder_transformer"):
            sparse, _ = self._prompt_embeddings(points)
        return self._decode_fast(ctx, sparse)

    def _decode_official(
        self, embed: torch.Tensor, high_res: list[torch.Tensor], points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The official ``MaskDecoder.forward`` on B copies of the image (the straightforward path)."""
        with record_function("ntt::decoder_transformer"):
            sparse, dense = self._prompt_embeddings(points)
            masks, iou, _, _ = self.sam2.sam_mask_decoder(
                image_embeddings=embed,
                image_pe=self.sam2.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
                repeat_image=True,
                high_res_features=high_res,
            )
        with record_function("ntt::iou_filter"):
            best_iou, best = iou.max(dim=1)
            kept = best_iou > self.iou_thr
            chosen = masks[torch.arange(masks.shape[0], device=masks.device), best]
            return chosen[kept], best_iou[kept], kept

    def _decode_fast(
        self, ctx: ImageContext, sparse: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The official ``MaskDecoder.predict_masks`` computation, reordered (``models.sam2_fast_decoder``).

        The two-way transformer's blocks must run for every prompt (its image tokens are updated by
        the prompt's tokens), but the IoU head needs only the IoU token. So, chunk by chunk: blocks
        -> final attention of the IoU token -> IoU -> filter -> for the kept prompts only, final
        attention of the chosen mask token, its hypernetwork and the upscaling.
        """
        dec = MultiPromptDecoder(self.sam2.sam_mask_decoder)
        cpu = sparse.device.type == "cpu"
        chunk = decoder_chunk(sparse.device, self.decoder_chunk)
        h, w = ctx.size
        logits, ious, kept_all = [], [], []
        for i in range(0, sparse.shape[0], chunk):
            with record_function("ntt::decoder_transformer"):
                tokens = dec.tokens(sparse[i : i + chunk])
                queries, keys = dec.two_way_blocks(ctx, tokens)
                iou_rows = torch.full((tokens.shape[0], 1), dec.iou_row(), device=tokens.device)
                iou_token = dec.final_attention(ctx, queries, tokens, keys, iou_rows)[:, 0]
            with record_function("ntt::iou_filter"):
                iou = dec.predict_iou(iou_token)
                best_iou, best = iou[:, 1:].max(dim=1)
                best = best + 1  # multimask outputs are tokens 1..3
                kept = best_iou > self.iou_thr
                kept_all.append(kept)
                ious.append(best_iou[kept])
            if kept.any():
                with record_function("ntt::upscaling"):
                    if not kept.all():  # (indexing copies the image tokens)
                        queries, tokens, keys, best = queries[kept], tokens[kept], keys[kept], best[kept]
                    rows = (dec.iou_row() + 1 + best)[:, None]
                    mask_token = dec.final_attention(ctx, queries, tokens, keys, rows)[:, 0]
                    hyper = _hypernetwork(dec.dec, mask_token, best)
                    step = self.upscale_chunk or (1 if cpu else chunk)  # CPU: ~12 MB per prompt, in cache
                    for j in range(0, keys.shape[0], step):
                        logits.append(dec.mask_logits(ctx, keys[j : j + step], hyper[j : j + step]))
        if not logits:
            logits.append(ctx.keys0.new_zeros((0, 4 * h, 4 * w)))
        return torch.cat(logits), torch.cat(ious), torch.cat(kept_all)


def _hypernetwork(decoder: nn.Module, mask_token: torch.Tensor, token_idx: torch.Tensor) -> torch.Tensor:
    """Hypernetwork weights ``(n, C/8)`` of the chosen mask token of each prompt, grouped by token.

    ``mask_token`` (n, C) the chosen mask token's transformer output; ``token_idx`` (n,) which of
    the ``num_mask_tokens`` it is (its hypernetwork MLP).
    """
    mlps = decoder.output_hypernetworks_mlps
    out = mask_token.new_empty((token_idx.numel(), mlps[0].layers[-1].out_features))
    for t in token_idx.unique().tolist():
        rows = (token_idx == t).nonzero(as_tuple=True)[0]
        out[rows] = mlps[t](mask_token[rows])
    return out
