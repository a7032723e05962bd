"""Backbone builders: official checkpoint formats, strict loading, Meta's resizing, clear errors.

The checkpoints are written here with random weights in Meta's own layouts and loaded back through
the real loading code (the sam2 package builder, timm's DINOv2 conversion).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from no_time_to_train.checkpoints.loading import build_dinov2, build_sam2
from no_time_to_train.checkpoints.registry import DINOV2_VARIANTS, SAM2_CHECKPOINT_FILES, resolve_sam2_config
from no_time_to_train.encoders.dinov2 import to_official as dinov2_to_official
from no_time_to_train.errors import CheckpointError, ConfigError
from no_time_to_train.tools import random_checkpoints
from no_time_to_train.tools.random_checkpoints import random_encoder as random_dinov2_vit
from no_time_to_train.tools.random_checkpoints import (
    write_random_encoder_checkpoint as write_random_dinov2_checkpoint,
)
from no_time_to_train.tools.random_checkpoints import write_random_sam2_checkpoint

REPO = Path(__file__).resolve().parents[2]
DOWNLOAD_SCRIPT = REPO / "checkpoints" / "download_checkpoints.sh"


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _assert_state_dicts_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


# ---------------------------------------------------------------------------------------------
# SAM2
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sam2_tiny_ckpt(tmp_path_factory) -> Path:
    return write_random_sam2_checkpoint("sam2_hiera_t.yaml", tmp_path_factory.mktemp("sam2") / "t.pt")


@pytest.mark.parametrize("cfg", ["sam2_hiera_t.yaml", "sam2.1_hiera_t.yaml"])
def test_sam2_random_checkpoint_round_trip(cfg, sam2_tiny_ckpt, tmp_path):
    path = sam2_tiny_ckpt if cfg == "sam2_hiera_t.yaml" else tmp_path / "t.pt"
    if cfg != "sam2_hiera_t.yaml":
        write_random_sam2_checkpoint(cfg, path, seed=0)
    written = torch.load(path, map_location="cpu", weights_only=True)
    assert list(written) == ["model"]  # Meta's layout: {"model": state_dict}

    model = build_sam2(cfg, path, device="cpu")
    assert type(model).__name__ == "SAM2Base"
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    _assert_state_dicts_equal(model.state_dict(), written["model"])

    torch.manual_seed(123)
    fresh = build_sam2(cfg, None).state_dict()  # the loaded weights really came from the file
    key = "image_encoder.trunk.patch_embed.proj.weight"
    assert not torch.equal(fresh[key], written["model"][key])


def test_sam2_image_encoder_forward(sam2_tiny_ckpt):
    model = build_sam2("sam2_hiera_t.yaml", sam2_tiny_ckpt)
    with torch.no_grad():
        out = model.forward_image(torch.rand(1, 3, 1024, 1024))
    shapes = [tuple(x.shape) for x in out["backbone_fpn"]]
    # levels 0 and 1 are already projected by conv_s0 / conv_s1 for the high-res decoder path
    assert shapes == [(1, 32, 256, 256), (1, 64, 128, 128), (1, 256, 64, 64)]
    features = out["vision_features"]
    assert features.shape == (1, 256, 64, 64)
    assert torch.isfinite(features).all() and features.std() > 0


def test_sam2_checkpoint_of_another_size_or_version(sam2_tiny_ckpt):
    with pytest.raises(CheckpointError) as err:
        build_sam2("sam2_hiera_s.yaml", sam2_tiny_ckpt)
    message = str(err.value)
    assert str(sam2_tiny_ckpt) in message and "sam2_hiera_s.yaml" in message
    assert "sam2_hiera_t.yaml" in message  # names the config the file belongs to

    with pytest.raises(CheckpointError, match=r"no_obj_embed_spatial") as err:
        build_sam2("sam2.1_hiera_t.yaml", sam2_tiny_ckpt)  # SAM2.0 file, SAM2.1 config
    assert "sam2_hiera_tiny.pt" in str(err.value)


@pytest.mark.parametrize(
    ("cfg", "file_name", "url"),
    [
        (
            "sam2_hiera_l.yaml",
            "sam2_hiera_large.pt",
            "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt",
        ),
        (
            "sam2.1_hiera_l.yaml",
            "sam2.1_hiera_large.pt",
            "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_large.pt",
        ),
    ],
)
def test_sam2_missing_checkpoint(cfg, file_name, url, tmp_path):
    path = tmp_path / "nowhere" / file_name
    with pytest.raises(CheckpointError) as err:
        build_sam2(cfg, path)
    message = str(err.value)
    for part in (str(path), file_name, url, "download_checkpoints.sh"):
        assert part in message


def test_sam2_truncated_or_foreign_checkpoint(sam2_tiny_ckpt, tmp_path):
    truncated = _truncate(sam2_tiny_ckpt, tmp_path / "half.pt")
    with pytest.raises(CheckpointError, match="truncated") as err:
        build_sam2("sam2_hiera_t.yaml", truncated)
    assert str(truncated) in str(err.value)

    foreign = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)  # no "model" entry
    with pytest.raises(CheckpointError, match="Meta's format"):
        build_sam2("sam2_hiera_t.yaml", foreign)


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("sam2_hiera_l.yaml", "sam2_hiera_l.yaml"),
        ("sam2_hiera_b+.yaml", "sam2_hiera_b+.yaml"),
        ("configs/sam2/sam2_hiera_s.yaml", "sam2_hiera_s.yaml"),
        ("./configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_t.yaml"),
        ("sam2_configs/sam2_hiera_l.yaml", "sam2_hiera_l.yaml"),
    ],
)
def test_resolve_sam2_config(given, resolved):
    assert resolve_sam2_config(given) == resolved


@pytest.mark.parametrize(
    "bad", ["sam2_hiera_xl.yaml", "sam2_hiera_l", "configs/sam2.1/sam2_hiera_l.yaml", "sam2.2_hiera_t.yaml"]
)
def test_unknown_sam2_config(bad):
    with pytest.raises(ConfigError) as err:
        build_sam2(bad, None)
    assert "sam2_hiera_l.yaml" in str(err.value) and "sam2.1_hiera_t.yaml" in str(err.value)


def test_sam2_table_matches_the_package_and_meta_urls():
    import sam2

    package = Path(sam2.__file__).parent
    assert len(SAM2_CHECKPOINT_FILES) == 8
    for name, variant in SAM2_CHECKPOINT_FILES.items():
        assert (package / variant.config).is_file(), variant.config
        assert variant.config.endswith("/" + name)
        release = "072824" if variant.version == "sam2" else "092824"
        assert variant.url == (
            f"https://dl.fbaipublicfiles.com/segment_anything_2/{release}/{variant.file_name}"
        )
    assert SAM2_CHECKPOINT_FILES["sam2_hiera_b+.yaml"].file_name == "sam2_hiera_base_plus.pt"


def test_sam2_builds_repeatedly_and_after_hydra_was_cleared():
    from hydra.core.global_hydra import GlobalHydra

    build_sam2("sam2_hiera_t.yaml", None)
    build_sam2("sam2.1_hiera_t.yaml", None)
    GlobalHydra.instance().clear()
    assert type(build_sam2("sam2_hiera_t.yaml", None)).__name__ == "SAM2Base"


# ---------------------------------------------------------------------------------------------
# DINOv2
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dinov2_small_ckpts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dinov2")
    return {
        name: write_random_dinov2_checkpoint(name, folder / DINOV2_VARIANTS[name].file_name, seed=7)
        for name in ("dinov2_small", "dinov2_small_reg")
    }


@pytest.mark.parametrize("name", ["dinov2_small", "dinov2_small_reg"])
def test_dinov2_meta_format_round_trip(name, dinov2_small_ckpts):
    path = dinov2_small_ckpts[name]
    reference = random_dinov2_vit(name, seed=7)  # the model the file was written from

    meta = torch.load(path, map_location="cpu", weights_only=True)
    assert meta["mask_token"].shape == (1, 384)
    assert meta["pos_embed"].shape == (1, 1370, 384)  # Meta keeps the class position in pos_embed
    assert "reg_token" not in meta
    if name.endswith("_reg"):
        assert meta["register_tokens"].shape == (1, 4, 384)
        assert not torch.equal(meta["cls_token"], reference.cls_token)  # class position split off
    else:
        assert "register_tokens" not in meta

    encoder = build_dinov2(name, path)
    assert (encoder.feat_dim, encoder.patch_size, encoder.img_size, encoder.grid_size) == (384, 14, 518, 37)
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    _assert_state_dicts_equal(encoder.vit.state_dict(), reference.state_dict())
    # random LayerScale gammas are large enough for every block to matter
    assert reference.blocks[-1].ls2.gamma.min() >= 0.1

    images = torch.rand(1, 3, 518, 518)
    with torch.no_grad():
        features = encoder(images)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        tokens = reference.forward_features((images - mean) / std)
    expected = tokens[:, reference.num_prefix_tokens :].reshape(1, 37, 37, 384)
    assert features.shape == (1, 37, 37, 384)
    assert (features - expected).abs().max().item() == 0.0
    assert features.std(dim=(1, 2)).mean() > 0.1  # patches differ: not a degenerate output


def test_dinov2_resizes_any_input_bicubically(dinov2_small_ckpts):
    encoder = build_dinov2("dinov2_small", dinov2_small_ckpts["dinov2_small"], img_size=224)
    images = torch.rand(2, 3, 90, 120)
    resized = F.interpolate(images, size=(224, 224), mode="bicubic", align_corners=False, antialias=False)
    with torch.no_grad():
        assert torch.equal(encoder(images), encoder(resized))
        assert encoder(images).shape == (2, 16, 16, 384)


@pytest.mark.parametrize("name", ["dinov2_small", "dinov2_small_reg"])
def test_dinov2_position_embedding_follows_meta_at_other_sizes(name, dinov2_small_ckpts):
    from timm.layers import resample_abs_pos_embed

    native = random_dinov2_vit(name, seed=7).pos_embed.detach()
    encoder = build_dinov2(name, dinov2_small_ckpts[name], img_size=224)  # 16 x 16 patches
    registers = name.endswith("_reg")
    num_prefix = 0 if registers else 1  # timm folds the register models' class position into cls_token
    grid = native[:, num_prefix:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    if registers:  # Meta's register models: offset 0, i.e. size=, with antialias
        resized = F.interpolate(grid, size=(16, 16), mode="bicubic", antialias=True)
    else:  # Meta's plain models: scale_factor (n + 0.1) / 37, no antialias
        scale = (16 + 0.1) / 37
        resized = F.interpolate(grid, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    expected = torch.cat([native[:, :num_prefix], resized.permute(0, 2, 3, 1).reshape(1, 256, 384)], dim=1)

    assert torch.equal(encoder.vit.pos_embed, expected)
    timm_own = resample_abs_pos_embed(native, new_size=(16, 16), num_prefix_tokens=num_prefix)
    # timm's own resampling (bicubic, size=, antialias) happens to equal Meta's for the register
    # models, but not for the plain ones (offset 0.1, no antialias): there the override matters.
    assert torch.equal(timm_own, expected) == registers
    with torch.no_grad():
        assert encoder(torch.rand(1, 3, 224, 224)).shape == (1, 16, 16, 384)

    at_native = build_dinov2(name, dinov2_small_ckpts[name])
    assert torch.equal(at_native.vit.pos_embed, native)


@pytest.mark.parametrize("registers", [False, True])
def test_meta_format_is_inverted_exactly_by_timm_for_swiglu(registers):
    """The giant's SwiGLU layout (w12 / w3), on a tiny ViT, through timm's own checkpoint filter."""
    from timm.layers import SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    torch.manual_seed(0)
    extra = dict(reg_tokens=4, no_embed_class=True) if registers else {}
    vit = VisionTransformer(
        img_size=56, patch_size=14, embed_dim=48, depth=2, num_heads=2, init_values=0.3,
        mlp_ratio=2.66667 * 2, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU, num_classes=0, **extra,
    )  # fmt: skip
    meta = dinov2_to_official("", vit.state_dict())
    assert "blocks.1.mlp.w12.weight" in meta and "blocks.1.mlp.w3.bias" in meta
    assert not any(".fc1." in k or ".fc2." in k for k in meta)
    assert ("register_tokens" in meta) == registers
    _assert_state_dicts_equal(checkpoint_filter_fn(dict(meta), vit), vit.state_dict())


@pytest.mark.parametrize(
    ("name", "file_name"),
    [("dinov2_large", "dinov2_vitl14_pretrain.pth"), ("dinov2_giant_reg", "dinov2_vitg14_reg4_pretrain.pth")],
)
def test_dinov2_missing_checkpoint(name, file_name, tmp_path):
    path = tmp_path / "dinov2" / file_name
    with pytest.raises(CheckpointError) as err:
        build_dinov2(name, path)
    message = str(err.value)
    letter = file_name[len("dinov2_vit")]
    url = f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{letter}14/{file_name}"
    for part in (str(path), file_name, url, "download_checkpoints.sh"):
        assert part in message


def test_dinov2_checkpoint_of_another_variant(dinov2_small_ckpts):
    small = dinov2_small_ckpts["dinov2_small"]
    with pytest.raises(CheckpointError) as err:
        build_dinov2("dinov2_base", small)
    message = str(err.value)
    assert str(small) in message and "dinov2_vits14_pretrain.pth" in message and "size mismatch" in message

    with pytest.raises(CheckpointError, match="dinov2_vits14_reg4_pretrain.pth"):
        build_dinov2("dinov2_small", dinov2_small_ckpts["dinov2_small_reg"])


def test_dinov2_truncated_checkpoint(dinov2_small_ckpts, tmp_path):
    truncated = _truncate(dinov2_small_ckpts["dinov2_small"], tmp_path / "half.pth")
    with pytest.raises(CheckpointError, match="truncated") as err:
        build_dinov2("dinov2_small", truncated)
    assert str(truncated) in str(err.value)


def test_dinov2_bad_names_and_sizes():
    with pytest.raises(ConfigError) as err:
        build_dinov2("dinov2_huge", None)
    assert all(name in str(err.value) for name in DINOV2_VARIANTS)
    with pytest.raises(ConfigError, match="multiple of 14"):
        build_dinov2("dinov2_small", None, img_size=500)


def test_dinov2_table():
    assert {name: v.feat_dim for name, v in DINOV2_VARIANTS.items()} == {
        "dinov2_small": 384, "dinov2_base": 768, "dinov2_large": 1024, "dinov2_giant": 1536,
        "dinov2_small_reg": 384, "dinov2_base_reg": 768, "dinov2_large_reg": 1024, "dinov2_giant_reg": 1536,
    }  # fmt: skip
    large_reg = DINOV2_VARIANTS["dinov2_large_reg"]
    assert large_reg.timm_name == "vit_large_patch14_reg4_dinov2"
    assert large_reg.url == (
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth"
    )


# ---------------------------------------------------------------------------------------------
# Random-weight CLI and download script
# ---------------------------------------------------------------------------------------------


def test_random_weights_cli(tmp_path, capsys):
    args = ["--random-weights", "--small", "--no-large", "--dest", str(tmp_path)]
    assert random_checkpoints.main(args) == 0
    assert "RANDOM" in capsys.readouterr().out
    sam2_file = tmp_path / "sam2_hiera_tiny.pt"
    dinov2_file = tmp_path / "dinov2" / "dinov2_vits14_pretrain.pth"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "dinov2/dinov2_vits14_pretrain.pth",
        "sam2_hiera_tiny.pt",
    ]

    dinov2_file.write_bytes(b"a real checkpoint")
    assert random_checkpoints.main(args) == 1  # refuses to overwrite
    assert dinov2_file.read_bytes() == b"a real checkpoint"
    assert str(dinov2_file) in capsys.readouterr().err

    with pytest.raises(SystemExit):
        random_checkpoints.main(["--dest", str(tmp_path)])  # --random-weights is required
    assert sam2_file.stat().st_size > 100 * 2**20  # SAM2-t has ~39 M float32 parameters


def _dry_run(*flags: str) -> list[str]:
    result = subprocess.run(
        ["bash", str(DOWNLOAD_SCRIPT), "--dry-run", "--dest", "/nonexistent/checkpoints", *flags],
        check=True,
        capture_output=True,
        text=True,
    )
    return re.findall(r"^download (\S+) -> (\S+)$", result.stdout, flags=re.M)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_download_script():
    subprocess.run(["bash", "-n", str(DOWNLOAD_SCRIPT)], check=True)
    assert _dry_run() == [
        (
            "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt",
            "/nonexistent/checkpoints/sam2_hiera_large.pt",
        ),
        (
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
            "/nonexistent/checkpoints/dinov2/dinov2_vitl14_pretrain.pth",
        ),
    ]
    small = {Path(path).name for _, path in _dry_run("--small", "--sam2.1")}
    assert small == {"sam2_hiera_tiny.pt", "sam2.1_hiera_tiny.pt", "dinov2_vits14_pretrain.pth"}
    # --all covers exactly the files the builders know, at the folders the README names
    everything = dict(_dry_run("--all"))
    known = {v.url: v.file_name for v in SAM2_CHECKPOINT_FILES.values()}
    known |= {v.url: f"dinov2/{v.file_name}" for v in DINOV2_VARIANTS.values()}
    known["https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"] = "sam_vit_h_4b8939.pth"
    assert {url: path.removeprefix("/nonexistent/checkpoints/") for url, path in everything.items()} == known


# ---------------------------------------------------------------------------------------------
# Real sizes (slow)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sam2_large_round_trip(tmp_path):
    path = write_random_sam2_checkpoint("sam2_hiera_l.yaml", tmp_path / "sam2_hiera_large.pt")
    written = torch.load(path, map_location="cpu", weights_only=True)["model"]
    model = build_sam2("configs/sam2/sam2_hiera_l.yaml", path)
    _assert_state_dicts_equal(model.state_dict(), written)
    assert model.image_encoder.trunk.patch_embed.proj.weight.shape[0] == 144


@pytest.mark.slow
def test_dinov2_large_round_trip(tmp_path):
    path = write_random_dinov2_checkpoint("dinov2_large", tmp_path / "dinov2_vitl14_pretrain.pth", seed=1)
    encoder = build_dinov2("dinov2_large", path)
    _assert_state_dicts_equal(
        encoder.vit.state_dict(), random_dinov2_vit("dinov2_large", seed=1).state_dict()
    )
    assert encoder.feat_dim == 1024 and len(encoder.vit.blocks) == 24
