"""The encoder families through their registry (``no_time_to_train.encoders``): official file
layouts (recorded from the official code), strict loading of random-weight files in those layouts,
checkpoint signatures, feature contracts, configuration checks; every family, DINOv2 included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from no_time_to_train.encoders import ENCODERS as ZOO
from no_time_to_train.encoders import FAMILIES, encoder_spec, identify_checkpoint, to_official
from no_time_to_train.encoders import build_encoder as build_zoo_encoder
from no_time_to_train.errors import CheckpointError, ConfigError
from no_time_to_train.models.pixel_stats import SAT_MEAN
from no_time_to_train.tools.random_checkpoints import random_encoder as random_zoo_vit
from no_time_to_train.tools.random_checkpoints import (
    write_random_encoder_checkpoint as write_random_zoo_checkpoint,
)

LAYOUTS = json.loads((Path(__file__).parents[1] / "data" / "official_layouts.json").read_text())
ZOO_NAMES = list(ZOO)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _meta_model(name: str):
    import timm

    with torch.device("meta"):
        return timm.create_model(ZOO[name].timm_name, pretrained=False)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_written_layout_is_the_official_codes(name):
    """Keys and shapes recorded from Meta's dinov3 / OpenAI's clip / Meta's PE code (on the meta
    device: the 7B and G models are checked without allocating them)."""
    got = {k: list(v.shape) for k, v in to_official(name, _meta_model(name).state_dict()).items()}
    assert got == LAYOUTS[name]


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_encoder_round_trips_through_timms_filter(name):
    """The official layout converts back to exactly the timm model's tensors (names and shapes)."""
    import importlib

    model = _meta_model(name)
    module = importlib.import_module(type(model).__module__)
    official = to_official(name, model.state_dict())
    back = module.checkpoint_filter_fn(official, model)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in back.items()} == want
    spec = encoder_spec(name)
    assert model.embed_dim == spec.feat_dim and len(model.blocks) == spec.depth


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_every_official_layout_is_recognised_as_its_encoder(name):
    """The checkpoint signature of each family names the encoder whose file it is (the meta device:
    no allocation), or one with the same official file."""
    found = identify_checkpoint(to_official(name, _meta_model(name).state_dict()))
    assert found is not None and (found == name or ZOO[found].timm_name == ZOO[name].timm_name), found


@pytest.mark.parametrize("name", sorted({f.smallest for f in FAMILIES.values()}))
def test_random_file_loads_strictly_and_features_follow_the_contract(name, tmp_path):
    """Every family through the registry: its smallest model's random file, in the official layout,
    loads strictly at the native size to exactly the model it was written from; at another input
    size (8 x 8 patches, to keep the suite fast) features follow the contract."""
    spec = encoder_spec(name)
    path = write_random_zoo_checkpoint(name, tmp_path / "w.pt", seed=3)
    native = build_zoo_encoder(name, path, img_size=spec.native_size)
    reference = random_zoo_vit(name, seed=3).state_dict()
    loaded = native.vit.state_dict()
    assert set(loaded) == set(reference) and all(torch.equal(loaded[k], reference[k]) for k in reference)
    g = 8
    enc = build_zoo_encoder(name, path, img_size=g * spec.patch_size)
    x = torch.rand(2, 3, 150, 170, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = enc(x)
    assert feats.shape == (2, g, g, spec.feat_dim) and torch.isfinite(feats).all()
    if spec.family == "clip":  # every token L2-normalised, as the reference
        assert torch.allclose(feats.norm(dim=-1), torch.ones(2, g, g), atol=1e-5)
    # Batch independence: one image alone gives its features in the batch.
    with torch.no_grad():
        assert torch.allclose(enc(x[1:]), feats[1:], atol=1e-5)


def test_loading_another_models_file_fails_with_the_source(tmp_path):
    path = write_random_zoo_checkpoint("dinov3_small", tmp_path / "s.pth")
    with pytest.raises(CheckpointError) as exc:
        build_zoo_encoder("dinov3_base", path)
    msg = str(exc.value)
    assert str(path) in msg and "dinov3_base" in msg and "licence" in msg
    with pytest.raises(CheckpointError, match="not found"):
        build_zoo_encoder("clip_b16", tmp_path / "missing.pt")


def test_sizes_and_pixel_statistics():
    with pytest.raises(ConfigError, match="multiple of 16, the patch size of dinov3_small"):
        build_zoo_encoder("dinov3_small", None, img_size=600)
    sat = build_zoo_encoder("dinov3_small", None, pixel_stats="sat")
    assert torch.allclose(sat.mean.flatten(), torch.tensor(SAT_MEAN))
    default = build_zoo_encoder("dinov3_small", None)
    assert torch.allclose(default.mean.flatten(), torch.tensor((0.485, 0.456, 0.406)))  # as the reference
    with pytest.raises(ConfigError, match="pixel_stats"):
        build_zoo_encoder("dinov3_small", None, pixel_stats="lab")


def test_config_checks_name_and_patch_size():
    from no_time_to_train.config import ModelCfg
    from no_time_to_train.validation import validate

    cfg = ModelCfg()
    cfg.encoder_cfg.name, cfg.encoder_cfg.img_size, cfg.encoder_cfg.patch_size = "dinov3_large", 592, 14
    with pytest.raises(ConfigError, match="dinov3_large has 16 x 16 patches. Set it to 16"):
        validate(cfg)
    cfg.encoder_cfg.name = "dinov3_larg"
    with pytest.raises(ConfigError, match="Did you mean `dinov3_large`"):
        validate(cfg)
    cfg.encoder_cfg.name, cfg.encoder_cfg.patch_size = "dinov3_large", 16
    assert validate(cfg) == []


def test_memory_files_record_the_patch_size():
    from no_time_to_train.models.memory_bank import MemoryBank
    from no_time_to_train.pipeline import memory_io

    bank = MemoryBank(2, 1, 8)
    made = memory_io.make_meta(bank, "clip_b32", 224, patch_size=32)
    assert made["patch_size"] == 32 and made["encoder"] == "clip_b32"
    want = memory_io.make_meta(bank, "clip_b32", 224, patch_size=16)
    with pytest.raises(CheckpointError, match="patch_size: file has 32, configuration has 16"):
        memory_io.check_meta({memory_io.META_KEY: made}, want, "m.ckpt")
    # Files written before the entry existed hold DINOv2 features: 14 x 14 patches.
    old = {k: v for k, v in memory_io.make_meta(bank, "dinov2_large", 518).items() if k != "patch_size"}
    memory_io.check_meta(
        {memory_io.META_KEY: old}, memory_io.make_meta(bank, "dinov2_large", 518), "old.ckpt"
    )


def test_clip_archive_conversion(tmp_path):
    """OpenAI ships TorchScript archives (fp16 tensors); the tool writes their float32 state dict."""
    from torch import nn

    from no_time_to_train.tools.clip_state_dict import main

    class Visual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 4, 4, bias=False)

        def forward(self, x):
            return self.conv1(x)

    class Archive(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = Visual().half()

        def forward(self, x):
            return self.visual(x)

    model = Archive()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "ViT-X.pt"))
    assert main([str(tmp_path / "ViT-X.pt"), str(tmp_path / "ViT-X.state_dict.pt")]) == 0
    sd = torch.load(tmp_path / "ViT-X.state_dict.pt", weights_only=True)
    assert list(sd) == ["visual.conv1.weight"] and sd["visual.conv1.weight"].dtype == torch.float32
    assert torch.equal(sd["visual.conv1.weight"], model.visual.conv1.weight.float())
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert (
        main([str(tmp_path / "junk.pt"), str(tmp_path / "out.pt")]) == 2
        and not (tmp_path / "out.pt").exists()
    )


def test_api_with_a_dinov3_encoder(tmp_path, tiny_ckpts):
    import numpy as np

    from no_time_to_train.api import FewShotSegmenter
    from no_time_to_train.pipeline import memory_io

    enc = write_random_zoo_checkpoint("dinov3_small", tmp_path / "dinov3.pth")
    seg = FewShotSegmenter.from_checkpoints(["thing"], sam2_cfg="sam2_hiera_t.yaml", sam2_ckpt=tiny_ckpts["sam2"],
                                            encoder="dinov3_small", encoder_ckpt=str(enc), device="cpu",
                                            points_per_side=2)  # fmt: skip
    assert (seg.cfg.encoder_cfg.img_size, seg.cfg.encoder_cfg.patch_size, seg.feat_dim) == (592, 16, 384)
    img = np.full((80, 96, 3), 120, np.uint8)
    mask = np.zeros((80, 96), bool)
    mask[20:60, 30:70] = True
    seg.add_reference(img, "thing", masks=mask)
    pred = seg.predict(img, progress=False)
    assert pred.masks.shape[1:] == (80, 96)
    seg.save_memory(str(tmp_path / "m.ckpt"))
    meta = memory_io.read(str(tmp_path / "m.ckpt"))[memory_io.META_KEY]
    assert (meta["encoder"], meta["img_size"], meta["patch_size"], meta["feat_dim"]) == (
        "dinov3_small",
        592,
        16,
        384,
    )
