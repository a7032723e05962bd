"""Configuration keys: paired keys validated in one place, accepted-but-ignored keys warned about,
``encoder_cfg.patch_size`` live."""

from __future__ import annotations

import pytest

from no_time_to_train.cli.modes import MODES
from no_time_to_train.config import DatasetCfgs, ModelCfg
from no_time_to_train.errors import ConfigError
from no_time_to_train.pipeline.builders import build_encoder
from no_time_to_train.validation import validate

FILL, TEST = MODES["fill_memory"], MODES["test"]


def test_defaults_are_consistent_and_silent():
    assert validate(ModelCfg(), DatasetCfgs(), FILL) == []
    assert validate(ModelCfg(), DatasetCfgs(), TEST) == []


def test_paired_keys_disagreeing_are_refused_naming_both():
    data = DatasetCfgs()
    data.fill_memory.image_size = 448
    with pytest.raises(
        ConfigError, match=r"fill_memory.image_size \(448\) must equal .*encoder_cfg.img_size \(518\)"
    ):
        validate(ModelCfg(), data, FILL)
    assert validate(ModelCfg(), data, TEST) == []  # only the fill modes make crops
    data = DatasetCfgs()
    data.test.image_size = 800
    with pytest.raises(ConfigError, match=r"test.image_size=800: the proposer \(sam2\) takes 1024 x 1024"):
        validate(ModelCfg(), data, TEST)
    cfg = ModelCfg()
    cfg.encoder_cfg.img_size = 500
    with pytest.raises(
        ConfigError,
        match=r"encoder_cfg.img_size=500 must be a positive multiple of 14, the patch size of dinov2_large",
    ):
        validate(cfg, None)


def test_ignored_reference_keys_are_accepted_and_warned_about():
    cfg, data = ModelCfg(), DatasetCfgs()
    cfg.memory_bank_cfg.enable = False
    data.test.with_query_points = True
    data.fill_memory.memory_length = 30  # memory_bank_cfg.length stays 10
    warnings = " | ".join(validate(cfg, data, FILL))
    assert "memory_bank_cfg.enable is accepted for compatibility and ignored" in warnings
    assert "with_query_points is accepted for compatibility and ignored" in warnings
    assert "memory_length (30) is ignored: the shots per class are" in warnings


def test_patch_size_is_checked_against_the_encoder():
    cfg = ModelCfg(encoder_ckpt_path=None)
    cfg.encoder_cfg.name, cfg.encoder_cfg.patch_size = "dinov2_small", 16
    with pytest.raises(ConfigError, match="patch_size=16, but dinov2_small has 14 x 14 patches"):
        build_encoder(cfg)
