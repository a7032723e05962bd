"""SAM2's mask decoder for many prompts on one image, computed with the official modules' weights.

The official ``MaskDecoder`` gives every prompt its own copy of the image tokens (``B x 4096 x 256``
for a 64x64 embedding) and runs all of the two-way transformer on each copy. The same numbers (up
to float rounding) come out of less work:

* **Prompt-independent work once per image.** In the first block the image tokens are still the
  image embedding plus the dense prompt, the same for every prompt, so the token->image keys and
  values and the image->token queries are projected once (:meth:`MultiPromptDecoder.prepare`).
  The positional encoding is never copied per prompt.
* **Projections moved to the token side.** Each attention has ``T = 8`` prompt tokens (obj-score,
  IoU, 4 mask tokens, the point, the padding point) and ``H = 8`` heads of ``d = 16`` channels.
  Projecting 4096 image tokens to ``H * d = 128`` channels per prompt costs ``4096 * 256 * 128``
  multiply-adds, whereas folding the image-side projection into the ``H * T = 64`` token rows
  (``q_h . (W_k,h x) = (W_k,h^T q_h) . x``; ``sum_t a_t (W_v x_t + b) = W_v (sum_t a_t x_t) + b``
  because attention rows sum to 1; the key bias adds a constant to a softmax row and drops out)
  costs ``4096 * 256 * 64``. Every per-prompt image-side product is done that way.
* **Only what is used, only for what is kept.** The final token->image attention treats each token
  on its own, and only the IoU token (every prompt) and the chosen mask token (prompts that pass the
  IoU filter) are used (:meth:`MultiPromptDecoder.final_attention`). Upscaling
  (:meth:`MultiPromptDecoder.mask_logits`) runs for the kept prompts only; its two stride-2
  transposed convolutions are per-pixel linear maps, computed as matrix products in a blocked
  channels-last layout (no scatter of sub-pixels in between).

Shapes: ``b`` prompts, ``N = h * w`` image tokens, ``C`` channels (256), ``T`` tokens per prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from no_time_to_train.compat import sam2_transformer_classes


@dataclass
class ImageContext:
    """Per-image, prompt-independent decoder inputs.

    ``keys0`` (N, C) image embedding + dense prompt, tokens first; ``pe`` (N, C) positional
    encoding; ``t2i_k`` (H, d, N) scaled keys and ``t2i_v`` (H, N, d) values of the first block's
    token->image attention; ``i2t_q`` (H, d, N) queries of its image->token attention;
    ``up1`` (N, 4 * C/4) and ``up0`` (N, 16 * C/8): bias + high-resolution features in the blocked
    layouts of the two upscaling steps (see :meth:`MultiPromptDecoder.mask_logits`).
    """

    keys0: torch.Tensor
    pe: torch.Tensor
    t2i_k: torch.Tensor
    t2i_v: torch.Tensor
    i2t_q: torch.Tensor
    up1: torch.Tensor
    up0: torch.Tensor
    size: tuple[int, int]


def supports(decoder: nn.Module) -> bool:
    """Whether ``decoder`` is a ``MaskDecoder`` whose transformer this module knows how to run."""
    TwoWayTransformer, TwoWayAttentionBlock, Attention = sam2_transformer_classes()
    t = getattr(decoder, "transformer", None)
    if type(t) is not TwoWayTransformer or type(t.final_attn_token_to_image) is not Attention:
        return False
    for i, blk in enumerate(t.layers):
        if type(blk) is not TwoWayAttentionBlock or blk.skip_first_layer_pe != (i == 0):
            return False
        if type(blk.cross_attn_token_to_image) is not Attention:
            return False
        if type(blk.cross_attn_image_to_token) is not Attention:
            return False
    return len(t.layers) >= 1


class MultiPromptDecoder:
    """Runs an official SAM2 ``MaskDecoder`` for a batch of prompts on one image.

    Holds no weights of its own; every parameter is read from ``decoder``.
    """

    def __init__(self, decoder: nn.Module):
        if not supports(decoder):
            raise TypeError("expected SAM2's MaskDecoder with a TwoWayTransformer of plain Attention layers")
        self.dec = decoder
        self.t = decoder.transformer

    # ------------------------------------------------------------------ per image
    def prepare(
        self,
        image_embed: torch.Tensor,
        image_pe: torch.Tensor,
        dense: torch.Tensor,
        high_res: list[torch.Tensor] | None,
    ) -> ImageContext:
        """``image_embed``, ``image_pe``, ``dense`` (1, C, h, w); ``high_res`` [(1, C/8, 4h, 4w),
        (1, C/4, 2h, 2w)] or None."""
        _, c, h, w = image_embed.shape
        keys0 = (image_embed + dense)[0].flatten(1).T.contiguous()  # (N, C)
        pe = image_pe[0].flatten(1).T.contiguous()
        first = self.t.layers[0]
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        scale = 1.0 / math.sqrt(t2i.internal_dim // t2i.num_heads)
        kpe = keys0 + pe
        t2i_k = _split_heads_t(t2i.k_proj(kpe), t2i.num_heads) * scale  # (H, d, N)
        t2i_v = _split_heads_t(t2i.v_proj(keys0), t2i.num_heads).transpose(1, 2).contiguous()  # (H, N, d)
        i2t_q = _split_heads_t(i2t.q_proj(kpe), i2t.num_heads)  # (H, d, N)

        dc1, _, _, dc2, _ = self.dec.output_upscaling
        c4, c8 = dc1.out_channels, dc2.out_channels
        up1 = dc1.bias.view(1, 1, 1, 1, c4).expand(h, w, 2, 2, c4)
        up0 = dc2.bias.view(1, 1, 1, 1, 1, 1, c8).expand(h, w, 2, 2, 2, 2, c8)
        if self.dec.use_high_res_features:
            feat_s0, feat_s1 = high_res
            # feat_s1[o, 2i+a, 2j+b] -> [i, j, a, b, o]
            up1 = up1 + feat_s1[0].view(c4, h, 2, w, 2).permute(1, 3, 2, 4, 0)
            # feat_s0[o, 4i+2a+a2, 4j+2b+b2] -> [i, j, a, b, a2, b2, o]
            up0 = up0 + feat_s0[0].view(c8, h, 2, 2, w, 2, 2).permute(1, 4, 2, 5, 3, 6, 0)
        return ImageContext(
            keys0=keys0,
            pe=pe,
            t2i_k=t2i_k.contiguous(),
            t2i_v=t2i_v,
            i2t_q=i2t_q.contiguous(),
            up1=up1.reshape(h * w, 4 * c4).contiguous(),
            up0=up0.reshape(h * w, 16 * c8).contiguous(),
            size=(h, w),
        )

    # ------------------------------------------------------------------ per prompt batch
    def tokens(self, sparse: torch.Tensor) -> torch.Tensor:
        """Output tokens (obj-score if any, IoU, mask tokens) followed by the sparse prompt, (b, T, C)."""
        dec = self.dec
        weights = [dec.iou_token.weight, dec.mask_tokens.weight]
        if dec.pred_obj_scores:
            weights.insert(0, dec.obj_score_token.weight)
        out = torch.cat(weights, dim=0)[None].expand(sparse.shape[0], -1, -1)
        return torch.cat([out, sparse], dim=1)

    def transformer(self, ctx: ImageContext, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Equals ``decoder.transformer(src, pe, tokens)`` with ``src``/``pe`` the image repeated
        ``b`` times. Returns ``(queries (b, T, C), image tokens (b, N, C))``."""
        queries, keys = self.two_way_blocks(ctx, tokens)
        rows = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        return self.final_attention(ctx, queries, tokens, keys, rows), keys

    def two_way_blocks(self, ctx: ImageContext, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer's blocks, without its final token->image attention: ``(queries (b, T, C),
        image tokens (b, N, C))``. Every token is needed here (the image tokens attend to all)."""
        point_pe = tokens
        queries = tokens
        keys = None  # (b, N, C) once the first block has mixed in the prompt
        for i, blk in enumerate(self.t.layers):
            if i == 0:
                queries = blk.norm1(blk.self_attn(q=queries, k=queries, v=queries))
                queries = blk.norm2(
                    queries + self._t2i_first(blk.cross_attn_token_to_image, ctx, queries + point_pe)
                )
            else:
                q = queries + point_pe
                queries = blk.norm1(queries + blk.self_attn(q=q, k=q, v=queries))
                keys_pe = keys + ctx.pe
                t2i = _token_to_image(
                    blk.cross_attn_token_to_image, queries + point_pe, keys, keys_pe=keys_pe
                )
                queries = blk.norm2(queries + t2i)
            queries = blk.norm3(queries + blk.mlp(queries))
            attn = blk.cross_attn_image_to_token
            if i == 0:
                keys = self._i2t_first(attn, ctx, queries + point_pe, queries)
            else:
                keys = _image_to_token(attn, keys, keys_pe, queries + point_pe, queries)
            keys = blk.norm4(keys)
        return queries, keys

    def final_attention(
        self,
        ctx: ImageContext,
        queries: torch.Tensor,
        point_pe: torch.Tensor,
        keys: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """The final token->image attention and norm for the tokens ``rows (b, r)`` of each prompt
        only (each token attends on its own): ``(b, r, C)``.

        After the blocks, only the IoU token is needed for every prompt, and one mask token for
        the prompts that pass the IoU filter.
        """
        index = rows[..., None].expand(-1, -1, queries.shape[-1])
        q, pe = queries.gather(1, index), point_pe.gather(1, index)
        out = _token_to_image(self.t.final_attn_token_to_image, q + pe, keys, pe=ctx.pe)
        return self.t.norm_final_attn(q + out)

    def _t2i_first(self, attn: nn.Module, ctx: ImageContext, q_in: torch.Tensor) -> torch.Tensor:
        b, t, _ = q_in.shape
        heads = attn.num_heads
        q = attn.q_proj(q_in).view(b * t, heads, -1).transpose(0, 1)  # (H, b*T, d)
        probs = torch.bmm(q, ctx.t2i_k).softmax(dim=-1)  # (H, b*T, N)
        out = torch.bmm(probs, ctx.t2i_v)  # (H, b*T, d)
        return attn.out_proj(out.transpose(0, 1).reshape(b, t, -1))

    def _i2t_first(
        self, attn: nn.Module, ctx: ImageContext, k_in: torch.Tensor, v_in: torch.Tensor
    ) -> torch.Tensor:
        b, t, _ = k_in.shape
        heads = attn.num_heads
        d = attn.internal_dim // heads
        k = attn.k_proj(k_in).view(b * t, heads, d).transpose(0, 1) / math.sqrt(d)  # (H, b*T, d)
        logits = torch.bmm(k, ctx.i2t_q)  # (H, b*T, N)
        n = logits.shape[-1]
        probs = logits.view(heads, b, t, n).transpose(0, 1).softmax(dim=2).reshape(b, heads * t, n)
        vt = _values_through_out_proj(attn, attn.v_proj(v_in))  # (b, H*T, C)
        return torch.baddbmm(ctx.keys0, probs.transpose(1, 2), vt)  # keys0 + attention output

    def iou_row(self) -> int:
        """Index of the IoU token among the ``T`` tokens (after the obj-score token, if any)."""
        return 1 if self.dec.pred_obj_scores else 0

    def predict_iou(self, iou_token: torch.Tensor) -> torch.Tensor:
        """``(b, num_mask_tokens)`` predicted IoU from the final IoU token ``(b, C)`` (sigmoid
        applied if the config says so)."""
        return self.dec.iou_prediction_head(iou_token)

    def mask_logits(self, ctx: ImageContext, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Low-resolution mask logits ``(n, 4h, 4w)`` of image tokens ``keys (n, N, C)`` for the
        hypernetwork outputs ``hyper (n, C/8)`` of the chosen mask tokens.

        ``ConvTranspose2d(k=2, s=2)`` maps each input pixel to its 2x2 output pixels linearly, so
        each step is one matrix product whose output stays in the blocked layout
        ``[i, j, a, b, (a2, b2,) channel]`` of output pixel ``(2i+a, 2j+b)``; the layer norm,
        GELU and the added features are per pixel and work in that layout too. Only the final
        ``(n, 4h, 4w)`` logits are rearranged.
        """
        dc1, ln1, act1, dc2, act2 = self.dec.output_upscaling
        n = keys.shape[0]
        h, w = ctx.size
        c, c4, c8 = dc1.in_channels, dc1.out_channels, dc2.out_channels
        w1 = dc1.weight.permute(0, 2, 3, 1).reshape(c, 4 * c4)  # [c_in, (a, b, c_out)]
        w2 = dc2.weight.permute(0, 2, 3, 1).reshape(c4, 4 * c8)
        x = torch.matmul(keys, w1).view(n, h * w, 4 * c4)
        x += ctx.up1
        x = _activation_(act1, F.layer_norm(x.view(n, h * w * 4, c4), (c4,), ln1.weight, ln1.bias, ln1.eps))
        y = torch.matmul(x.view(n, h * w * 4, c4), w2).view(n, h * w, 16 * c8)
        y += ctx.up0
        y = _activation_(act2, y)
        m = torch.bmm(y.view(n, h * w * 16, c8), hyper[:, :, None])  # (n, N*16, 1)
        m = m.view(n, h, w, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4, 6)  # [n, i, a, a2, j, b, b2]
        return m.reshape(n, 4 * h, 4 * w)


def _activation_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``, in place for the GELU of SAM2's upscaling (saves a large allocation per call)."""
    if type(act) is nn.GELU:
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    return act(x)


def _split_heads_t(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(N, H*d)`` -> ``(H, d, N)``."""
    n, hd = x.shape
    return x.T.reshape(heads, hd // heads, n)


def _values_through_out_proj(attn: nn.Module, v: torch.Tensor) -> torch.Tensor:
    """Per-head values pushed through ``out_proj``: ``(b, T, H*d)`` -> ``(b, H*T, C)``.

    ``out_proj(concat_h A_h v_h) = sum_h A_h (v_h W_o,h^T) + b_o``; as every attention row sums
    to 1, ``b_o / H`` is added to each head's rows.
    """
    b, t, _ = v.shape
    heads = attn.num_heads
    w_o = attn.out_proj.weight.view(attn.out_proj.out_features, heads, -1)  # (C, H, d)
    vt = torch.einsum("bthd,chd->bhtc", v.view(b, t, heads, -1), w_o) + attn.out_proj.bias / heads
    return vt.reshape(b, heads * t, -1)


def _token_to_image(
    attn: nn.Module,
    q_in: torch.Tensor,
    keys: torch.Tensor,
    keys_pe: torch.Tensor | None = None,
    pe: torch.Tensor | None = None,
) -> torch.Tensor:
    """``attn(q=q_in, k=keys + pe, v=keys)`` for ``q_in (b, T, C)`` and ``keys (b, N, C)``.

    Give ``keys_pe`` = keys + pe ``(b, N, C)`` when it exists anyway; otherwise ``pe (N, C)``
    enters as one product shared by the batch (cheaper than the sum for few query rows).
    """
    b, t, _ = q_in.shape
    heads = attn.num_heads
    d = attn.internal_dim // heads
    c = keys.shape[-1]
    q = attn.q_proj(q_in).view(b, t, heads, d) / math.sqrt(d)
    # q_h . (W_k,h x + b_k,h): the bias term is constant along the softmax row and drops out.
    qt = torch.einsum("bthd,hdc->bhtc", q, attn.k_proj.weight.view(heads, d, c)).reshape(b, heads * t, c)
    if keys_pe is not None:
        logits = torch.bmm(qt, keys_pe.transpose(1, 2))
    else:
        logits = torch.baddbmm((qt.reshape(-1, c) @ pe.T).view(b, heads * t, -1), qt, keys.transpose(1, 2))
    probs = logits.softmax(dim=-1)  # (b, H*T, N)
    ak = torch.bmm(probs, keys).view(b, heads, t, c)  # rows sum to 1, so W_v and b_v apply after
    v = torch.einsum("bhtc,hdc->bthd", ak, attn.v_proj.weight.view(heads, d, c))
    return attn.out_proj((v + attn.v_proj.bias.view(heads, d)).reshape(b, t, heads * d))


def _image_to_token(
    attn: nn.Module, keys: torch.Tensor, keys_pe: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor
) -> torch.Tensor:
    """``keys + attn(q=keys_pe, k=k_in, v=v_in)``: image tokens ``(b, N, C)`` attend to prompt
    tokens ``(b, T, C)``; softmax over each head's ``T`` tokens."""
    b, t, _ = k_in.shape
    heads = attn.num_heads
    d = attn.internal_dim // heads
    c = keys.shape[-1]
    n = keys.shape[1]
    k = attn.k_proj(k_in).view(b, t, heads, d) / math.sqrt(d)
    # (W_q,h x + b_q,h) . k_h = x . (W_q,h^T k_h) + b_q,h . k_h
    kt = torch.einsum("bthd,hdc->bhtc", k, attn.q_proj.weight.view(heads, d, c)).reshape(b, heads * t, c)
    bias = torch.einsum("bthd,hd->bht", k, attn.q_proj.bias.view(heads, d)).reshape(b, heads * t, 1)
    logits = torch.baddbmm(bias, kt, keys_pe.transpose(1, 2))  # (b, H*T, N)
    probs = logits.view(b, heads, t, n).softmax(dim=2).view(b, heads * t, n)
    vt = _values_through_out_proj(attn, attn.v_proj(v_in))
    return torch.baddbmm(keys, probs.transpose(1, 2), vt)
