"""The reference's ablation configs are shipped, parse, name known encoders with their own sizes,
and the MobileSAM one stops with a message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from no_time_to_train.encoders import encoder_spec

from ..conftest import REPO, run_cli

NEW_EXPS = REPO / "no_time_to_train" / "new_exps"
EXPECTED = [
    "sam2/sam2_tiny.yaml", "sam2/sam2_small.yaml", "sam2/sam2_base_plus.yaml",
    "dinov3/coco_DinoB_Sam2L.yaml", "dinov3/coco_DinoL_Sam2L.yaml", "dinov3/coco_DinoH_Sam2L.yaml",
    "clip/coco_clipb16_Sam2L.yaml", "clip/coco_clipb32_Sam2L.yaml", "clip/coco_clipl14_Sam2L.yaml",
    "clip/coco_clipl14@336px_Sam2L.yaml", "pe/coco_PEl14_Sam2L.yaml", "pe/coco_PEg14_Sam2L.yaml",
    "EO/dinov3_b.yaml", "EO/dinov3_l.yaml", "EO/dinov3_h.yaml", "EO/dinov3_7b.yaml", "EO/dinov3_sat_l.yaml",
    "EO/dinov3_sat_7b.yaml", "EO/claptrap/dinov2_l.yaml", "EO/claptrap/dinov3_l.yaml",
    "EO/claptrap/dinov3_sat_l.yaml", "mobilesam/coco_dinov2l_mobilesam.yaml",
]  # fmt: skip


def test_every_ablation_config_is_shipped_and_consistent():
    for rel in EXPECTED:
        cfg = yaml.safe_load((NEW_EXPS / rel).read_text())
        mc = cfg["model"]["init_args"]["model_cfg"]
        spec = encoder_spec(mc["encoder_cfg"]["name"])
        assert mc["encoder_cfg"]["patch_size"] == spec.patch_size, rel
        assert mc["encoder_cfg"]["img_size"] == spec.img_size, rel
        assert cfg["model"]["init_args"]["dataset_cfgs"]["fill_memory"]["image_size"] == spec.img_size, rel
        assert Path(mc["encoder_ckpt_path"]).name == Path(spec.ckpt_path).name, rel


@pytest.mark.parametrize("rel", EXPECTED)
def test_ablation_config_parses(rel, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["test", "--config", NEW_EXPS / rel, "--print_config"])
    assert exc.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    name = yaml.safe_load((NEW_EXPS / rel).read_text())["model"]["init_args"]["model_cfg"]["encoder_cfg"][
        "name"
    ]
    assert printed["model"]["init_args"]["model_cfg"]["encoder_cfg"]["name"] == name


def test_mobilesam_config_is_refused_with_a_reason(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mobile = tmp_path / "checkpoints" / "mobilesam" / "mobile_sam_model.pt"
    mobile.parent.mkdir(parents=True)
    # MobileSAM's layout: a flat state dict with a TinyViT image encoder.
    torch.save({"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(8, 3, 3, 3),
                "mask_decoder.iou_token.weight": torch.zeros(1, 256)}, mobile)  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        run_cli(["test", "--config", NEW_EXPS / "mobilesam" / "coco_dinov2l_mobilesam.yaml",
                 "--model.test_mode", "test", "--model.init_args.model_cfg.encoder_ckpt_path", "null",
                 "--trainer.devices", "1", "--trainer.logger", "false"])  # fmt: skip
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "MobileSAM checkpoint" in err and "not supported" in err and "sam2_tiny.yaml" in err


def test_download_script_lists_every_ablation_file(tmp_path):
    """--clip and --pe fetch the files the configs read (CLIP converted to *.state_dict.pt);
    --dinov3 lists the licence-gated files and checks present ones against their hash prefix."""
    import hashlib
    import re
    import shutil
    import subprocess

    from no_time_to_train.encoders import ENCODERS as ZOO

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    script = REPO / "checkpoints" / "download_checkpoints.sh"
    out = subprocess.run(["bash", str(script), "--dry-run", "--dest", str(tmp_path), "--clip", "--pe", "--dinov3"],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    downloads = dict(re.findall(r"^download (\S+) -> (\S+)$", out, flags=re.M))
    listed = set(re.findall(r"^  missing  (\S+)$", out, flags=re.M))
    for name, spec in ZOO.items():
        want = str(tmp_path / spec.ckpt_path.removeprefix("./checkpoints/"))
        if spec.family == "clip":  # the TorchScript archive is fetched, then converted
            jit = want.replace(".state_dict.pt", ".pt")
            url = next(u for u, p in downloads.items() if p == jit)
            assert re.search(r"/models/[0-9a-f]{64}/ViT-", url), url
        elif spec.family == "pe":
            assert want in downloads.values(), name
        elif spec.family == "dinov3":
            assert want in listed, name
    # A present DINOv3 file whose SHA-256 does not start with its name's prefix is reported.
    bad = tmp_path / "dinov3" / "checkpoints" / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"x")
    assert not hashlib.sha256(b"x").hexdigest().startswith("08c60483")
    out = subprocess.run(["bash", str(script), "--dest", str(tmp_path), "--dinov3"], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    assert f"DAMAGED  {bad}" in out
