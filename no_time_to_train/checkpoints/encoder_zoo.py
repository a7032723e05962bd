"""Every feature encoder the configs may name: its family, token grid, width, timm architecture and
official weight file (the names, sizes and paths of the reference's ablation configs).

Families and how each turns an image into patch features (``models.vit_encoders``):

* ``dinov2``: final-norm patch tokens (``checkpoints.registry.DINOV2_VARIANTS``; 518 / 14).
* ``dinov3``: last block, final norm, class and 4 storage tokens dropped; 592 / 16; ImageNet
  statistics (also for the satellite models, as the reference; ``encoder_cfg.pixel_stats: sat``
  selects Meta's SAT-493M statistics).
* ``clip``: OpenAI's ViTs up to the last block, no ``ln_post`` / projection, class token dropped,
  every token L2-normalised; CLIP statistics; 224 (or 336) / 32, 16 or 14.
* ``pe``: Perception Encoder Spatial, last block (these models have no final norm), class token
  dropped; ImageNet statistics; the reference runs them at 518 / 14 (native 448).
"""

from __future__ import annotations

from dataclasses import dataclass

from no_time_to_train.checkpoints.registry import DINOV2_VARIANTS

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SAT_MEAN = (0.430, 0.411, 0.296)  # Meta's statistics of SAT-493M (DINOv3 satellite models)
SAT_STD = (0.213, 0.156, 0.143)

DINOV3_DOWNLOAD = (
    "DINOv3 weights are distributed by Meta after accepting the DINOv3 licence: request access at "
    "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ and download {file} from the "
    "link you receive into checkpoints/dinov3/checkpoints/."
)
CLIP_DOWNLOAD = (
    "OpenAI's CLIP weights come as TorchScript archives ({jit}); the configs read a plain state dict: "
    "`bash checkpoints/download_checkpoints.sh --clip` downloads and converts them, or "
    "`python -m no_time_to_train.tools.clip_state_dict {jit} checkpoints/clip/{file}` converts your copy."
)
PE_DOWNLOAD = (
    "Perception Encoder weights are on the Hugging Face hub (facebook/{repo}, Apache-2.0; the model page "
    "may ask you to log in and accept its terms): `bash checkpoints/download_checkpoints.sh --pe`, or put "
    "{file} into checkpoints/pe/."
)


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder name of ``model_cfg.encoder_cfg.name``."""

    family: str  # dinov2, dinov3, clip, pe
    timm_name: str
    feat_dim: int
    depth: int
    patch_size: int
    img_size: int  # the reference's input side for this encoder
    native_size: int  # the side its position embedding / RoPE reference grid was trained at
    ckpt_path: str  # where the reference's configs expect the official file
    download: str  # how to obtain the official file


def _dinov3(arch: str, timm_name: str, dim: int, depth: int, weights: str, digest: str) -> EncoderSpec:
    file = f"dinov3_{arch}_pretrain_{weights}-{digest}.pth"
    return EncoderSpec("dinov3", timm_name, dim, depth, 16, 592, 592,
                       f"./checkpoints/dinov3/checkpoints/{file}", DINOV3_DOWNLOAD.format(file=file))  # fmt: skip


def _clip(tag: str, timm_name: str, dim: int, depth: int, patch: int, size: int) -> EncoderSpec:
    file = f"ViT-{tag}.state_dict.pt"
    return EncoderSpec("clip", timm_name, dim, depth, patch, size, size, f"./checkpoints/clip/{file}",
                       CLIP_DOWNLOAD.format(jit=f"ViT-{tag}.pt", file=file))  # fmt: skip


def _pe(repo: str, timm_name: str, dim: int, depth: int) -> EncoderSpec:
    file = f"{repo}.pt"
    return EncoderSpec("pe", timm_name, dim, depth, 14, 518, 448, f"./checkpoints/pe/{file}",
                       PE_DOWNLOAD.format(repo=repo, file=file))  # fmt: skip


ZOO: dict[str, EncoderSpec] = {
    # DINOv3, LVD-1689M web images. The *_qkvb timm variants keep the query/value biases of
    # Meta's files (the plain ones drop them); the 7B model has none.
    "dinov3_small": _dinov3("vits16", "vit_small_patch16_dinov3_qkvb", 384, 12, "lvd1689m", "08c60483"),
    "dinov3_small_plus": _dinov3("vits16plus", "vit_small_plus_patch16_dinov3_qkvb", 384, 12, "lvd1689m", "4057cbaa"),
    "dinov3_base": _dinov3("vitb16", "vit_base_patch16_dinov3_qkvb", 768, 12, "lvd1689m", "73cec8be"),
    "dinov3_large": _dinov3("vitl16", "vit_large_patch16_dinov3_qkvb", 1024, 24, "lvd1689m", "8aa4cbdd"),
    "dinov3_huge": _dinov3("vith16plus", "vit_huge_plus_patch16_dinov3_qkvb", 1280, 32, "lvd1689m", "7c1da9a5"),
    "dinov3_7b": _dinov3("vit7b16", "vit_7b_patch16_dinov3", 4096, 40, "lvd1689m", "a955f4ea"),
    # DINOv3, SAT-493M satellite images
    "dinov3_sat_large": _dinov3("vitl16", "vit_large_patch16_dinov3_qkvb", 1024, 24, "sat493m", "eadcf0ff"),
    "dinov3_sat_7b": _dinov3("vit7b16", "vit_7b_patch16_dinov3", 4096, 40, "sat493m", "a6675841"),
    # OpenAI CLIP (QuickGELU, as OpenAI's models)
    "clip_b32": _clip("B-32", "vit_base_patch32_clip_quickgelu_224.openai", 768, 12, 32, 224),
    "clip_b16": _clip("B-16", "vit_base_patch16_clip_quickgelu_224.openai", 768, 12, 16, 224),
    "clip_l14": _clip("L-14", "vit_large_patch14_clip_quickgelu_224.openai", 1024, 24, 14, 224),
    "clip_l14@336px": _clip("L-14-336px", "vit_large_patch14_clip_quickgelu_336.openai", 1024, 24, 14, 336),
    # Perception Encoder, spatial
    "PE-Spatial-L14-448": _pe("PE-Spatial-L14-448", "vit_pe_spatial_large_patch14_448", 1024, 24),
    "PE-Spatial-G14-448": _pe("PE-Spatial-G14-448", "vit_pe_spatial_gigantic_patch14_448", 1536, 50),
}  # fmt: skip

for _name, _v in DINOV2_VARIANTS.items():
    ZOO.setdefault(_name, EncoderSpec(
        "dinov2", _v.timm_name, _v.feat_dim, _v.depth, 14, 518, 518,
        f"./checkpoints/dinov2/{_v.file_name}", f"{_v.url} (`bash checkpoints/download_checkpoints.sh`)",
    ))  # fmt: skip

FAMILIES = ("dinov2", "dinov3", "clip", "pe")
SMALLEST = {
    "dinov2": "dinov2_small",
    "dinov3": "dinov3_small",
    "clip": "clip_b32",
    "pe": "PE-Spatial-L14-448",
}
"""The smallest member of each family (end-to-end tests, benchmark)."""


def encoder_spec(name: str) -> EncoderSpec:
    from no_time_to_train.errors import ConfigError

    spec = ZOO.get(name)
    if spec is None:
        import difflib

        close = difflib.get_close_matches(name, list(ZOO), n=1, cutoff=0.6)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise ConfigError(
            f"model_cfg.encoder_cfg.name={name!r} is not a known encoder.{hint} Valid names: {', '.join(ZOO)}."
        )
    return spec
