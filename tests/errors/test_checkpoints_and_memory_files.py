"""Bad inputs, one test per case: checkpoints, SAM2 configs and memory files
(conventions: ``tests/errors/__init__.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from no_time_to_train.pipeline import memory_io

from ..conftest import run_cli
from ..helpers import (
    BANK_FLAG,
    FILL_FLAG,
    REAL_MODEL,
    TEST_FLAG,
    base,
    expect_user_error,
    oracle_yaml,
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# checkpoints and SAM2 config (the real loaders)
# ---------------------------------------------------------------------------------------------


def test_missing_encoder_checkpoint(in_tmp, synth, capsys):
    cfg = oracle_yaml(in_tmp / "c.yaml", synth, class_path=REAL_MODEL)
    missing = in_tmp / "nowhere" / "dinov2_vitl14_pretrain.pth"
    expect_user_error(
        capsys,
        [*base(cfg), "--model.test_mode", "fill_memory", "--out_path", in_tmp / "m.ckpt",
         "--model.init_args.model_cfg.encoder_ckpt_path", missing],
        str(missing), "not found", "dinov2_vitl14_pretrain.pth", "download",
    )  # fmt: skip


def _real_test_cfg(tmp: Path, synth: dict) -> str:
    # A random-weight DINOv2-S (built in a second) so that the run reaches the SAM2 builder.
    return oracle_yaml(tmp / "real.yaml", synth, class_path=REAL_MODEL,
                       model_cfg={"encoder_cfg": {"name": "dinov2_small"}, "encoder_ckpt_path": None})  # fmt: skip


def test_truncated_sam2_checkpoint(in_tmp, synth, capsys):
    cfg = _real_test_cfg(in_tmp, synth)
    whole = in_tmp / "whole.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, whole)
    cut = in_tmp / "sam2_hiera_large.pt"
    cut.write_bytes(whole.read_bytes()[:600])
    expect_user_error(
        capsys,
        [*base(cfg), "--model.test_mode", "test", "--model.init_args.model_cfg.sam2_ckpt_path", cut],
        str(cut), "truncated", "download",
    )  # fmt: skip


def test_unknown_sam2_config(in_tmp, synth, capsys):
    cfg = _real_test_cfg(in_tmp, synth)
    expect_user_error(
        capsys,
        [*base(cfg), "--model.test_mode", "test", "--model.init_args.model_cfg.sam2_cfg_file", "sam2_hiera_xl.yaml"],
        "sam2_hiera_xl.yaml", "sam2_cfg_file", "sam2_hiera_l.yaml",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# memory files
# ---------------------------------------------------------------------------------------------


def test_missing_memory_file(in_tmp, bank, capsys):
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", in_tmp / "nope.ckpt"],
        "--ckpt_path", "nope.ckpt", "not found", "--out_path",
    )  # fmt: skip


def test_truncated_memory_file(in_tmp, bank, capsys):
    cut = in_tmp / "memory_postprocessed.ckpt"
    cut.write_bytes(bank.post.read_bytes()[: bank.post.stat().st_size // 2])
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", cut],
        str(cut), "truncated", "fill_memory",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        (f"{BANK_FLAG}.length", 3, "memory_bank_cfg.length"),
        (f"{BANK_FLAG}.category_num", 4, "memory_bank_cfg.category_num"),
        ("--model.init_args.model_cfg.encoder_cfg.name", "dinov2_small", "encoder_cfg.name"),
    ],
)
def test_memory_file_from_another_config(in_tmp, bank, capsys, flag, value, needle):
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, flag, value],
        str(bank.post), needle, "does not match",
    )  # fmt: skip


def test_memory_file_of_an_older_version(in_tmp, bank, capsys):
    ckpt = torch.load(bank.post, map_location="cpu", weights_only=True)
    ckpt[memory_io.META_KEY]["format_version"] = 0
    old = in_tmp / "old.ckpt"
    torch.save(ckpt, old)
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", old],
        str(old), "version 0", "fill_memory",
    )  # fmt: skip


def test_memory_file_of_the_reference_implementation(in_tmp, bank, capsys):
    ref = in_tmp / "reference_memory.ckpt"
    hparams = {"model_cfg": {"name": "matching_baseline_noAMG"}, "test_mode": "fill_memory"}
    torch.save({"state_dict": {"seg_model.mem_feats": torch.zeros(2, 3)}, "hyper_parameters": hparams,
                "epoch": 0}, ref)  # fmt: skip
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", ref],
        str(ref), "original implementation", "fill_memory",
    )  # fmt: skip


def test_test_on_a_bank_that_was_never_postprocessed(in_tmp, bank, capsys):
    expect_user_error(
        capsys, [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.mem],
        "--ckpt_path", "postprocess_memory",
    )  # fmt: skip


def test_fill_memory_refuses_a_filled_bank(in_tmp, bank, capsys):
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "fill_memory", "--ckpt_path", bank.mem, "--out_path", in_tmp / "m.ckpt"],
        "fill_memory", "--ckpt_path",
    )  # fmt: skip


def test_postprocess_twice_is_idempotent(in_tmp, bank, capsys):
    again = in_tmp / "again.ckpt"
    run_cli(
        [
            *base(bank.cfg),
            "--model.test_mode",
            "postprocess_memory",
            "--ckpt_path",
            bank.post,
            "--out_path",
            again,
        ]
    )
    assert "already postprocessed" in capsys.readouterr().out
    first = torch.load(bank.post, map_location="cpu", weights_only=True)["state_dict"]
    second = torch.load(again, map_location="cpu", weights_only=True)["state_dict"]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_out_path_equal_to_ckpt_path(in_tmp, bank, capsys):
    before = bank.post.read_bytes()
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "postprocess_memory", "--ckpt_path", bank.post, "--out_path", bank.post],
        "--out_path", "--ckpt_path", str(bank.post),
    )  # fmt: skip
    assert bank.post.read_bytes() == before


def test_export_result_onto_the_test_json_is_refused(in_tmp, bank, synth, capsys):
    # A copy: without the check the shared generated json would be overwritten.
    js = in_tmp / "targets.json"
    js.write_bytes(Path(synth["val_json"]).read_bytes())
    before = js.read_bytes()
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, f"{TEST_FLAG}.json_file", js,
         "--export_result", js],
        "--export_result", str(js), "dataset_cfgs.test.json_file",
    )  # fmt: skip
    assert js.read_bytes() == before


def test_out_path_onto_the_reference_pickle_is_refused(in_tmp, bank, capsys):
    pkl = in_tmp / "refs.pkl"
    pkl.write_bytes(Path(bank.pkl).read_bytes())
    before = pkl.read_bytes()
    expect_user_error(
        capsys,
        [*base(bank.cfg), "--model.test_mode", "fill_memory", f"{FILL_FLAG}.memory_pkl", pkl, "--out_path", pkl],
        "--out_path", str(pkl), "memory_pkl",
    )  # fmt: skip
    assert pkl.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# every checkpoint problem at once, in the caller's spelling; presets
# ---------------------------------------------------------------------------------------------


def _standins(root: Path, tiny_ckpts: dict) -> None:
    import shutil

    (root / "checkpoints" / "random" / "dinov2").mkdir(parents=True)
    shutil.copy(tiny_ckpts["sam2"], root / "checkpoints" / "random" / "sam2_hiera_tiny.pt")
    shutil.copy(
        tiny_ckpts["dinov2"], root / "checkpoints" / "random" / "dinov2" / "dinov2_vits14_pretrain.pth"
    )


def test_api_reports_every_missing_checkpoint_at_once(in_tmp, tiny_ckpts):
    from no_time_to_train.api import FewShotSegmenter
    from no_time_to_train.errors import CheckpointError

    _standins(in_tmp, tiny_ckpts)
    with pytest.raises(CheckpointError) as exc:
        FewShotSegmenter.from_checkpoints(["boat", "bird"])  # the README's defaults: SAM2-L + DINOv2-L
    msg = str(exc.value)
    assert msg.startswith(
        "2 checkpoint problems: (1) SAM2 checkpoint ./checkpoints/sam2_hiera_large.pt (sam2_ckpt=)"
    )
    assert (
        "(2) encoder checkpoint ./checkpoints/dinov2/dinov2_vitl14_pretrain.pth (encoder_ckpt=) not found"
        in msg
    )
    assert "checkpoints/random/sam2_hiera_tiny.pt (sam2_hiera_t.yaml)" in msg
    assert "checkpoints/random/dinov2/dinov2_vits14_pretrain.pth (dinov2_small)" in msg
    assert "preset='random'" in msg and "preset='small'" in msg


def test_api_reports_wrong_models_with_the_keyword_to_change(in_tmp, tiny_ckpts):
    from no_time_to_train.api import FewShotSegmenter
    from no_time_to_train.errors import CheckpointError

    with pytest.raises(CheckpointError) as exc:
        FewShotSegmenter.from_checkpoints(
            ["boat"], sam2_ckpt=tiny_ckpts["sam2"], encoder_ckpt=tiny_ckpts["dinov2"]
        )
    msg = str(exc.value)
    assert msg.startswith("2 checkpoint problems:")
    assert (
        "is the file of sam2_hiera_t.yaml, but the config is sam2_hiera_l.yaml: pass sam2_cfg='sam2_hiera_t.yaml'"
        in msg
    )
    assert "is the file of dinov2_small, but the encoder is dinov2_large: pass encoder='dinov2_small'" in msg


def test_api_random_preset_runs_offline(in_tmp):
    import numpy as np

    from no_time_to_train.api import FewShotSegmenter

    seg = FewShotSegmenter.from_checkpoints(["thing"], preset="random", points_per_side=4, device="cpu")
    assert (in_tmp / "checkpoints" / "random" / "sam2_hiera_tiny.pt").is_file()
    img = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), bool)
    img[16:48, 16:48] = 200
    mask[16:48, 16:48] = True
    seg.add_reference(img, "thing", masks=mask)
    pred = seg.predict(img)
    assert pred.masks.shape[1:] == (64, 64) and len(pred.scores) == len(pred.labels)


def test_segment_image_names_its_own_flags(in_tmp, tiny_ckpts, capsys):
    import numpy as np
    from PIL import Image

    from no_time_to_train.cli.segment_image import main

    refs = in_tmp / "refs" / "thing"
    refs.mkdir(parents=True)
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:30, 10:30] = 255
    Image.fromarray(img).save(refs / "a.png")
    Image.fromarray(img[..., 0]).save(refs / "a_mask.png")
    args = ["--refs", str(in_tmp / "refs"), "--images", str(refs / "a.png"), "--out", str(in_tmp / "out")]
    # The default (paper) encoder with the DINOv2-S file, and no SAM2 file: both reported, in flags.
    assert main([*args, "--encoder-ckpt", tiny_ckpts["dinov2"]]) == 2
    err = capsys.readouterr().err
    assert "2 checkpoint problems" in err and "(--sam2-ckpt) not found" in err
    assert "pass --encoder dinov2_small" in err and "--preset random" in err
    # --preset small names dinov2_small: that file now fits, only SAM2 is missing.
    assert main([*args, "--preset", "small", "--encoder-ckpt", tiny_ckpts["dinov2"]]) == 2
    err = capsys.readouterr().err
    assert (
        "1 checkpoint problem:" in err and "./checkpoints/sam2_hiera_tiny.pt (--sam2-ckpt) not found" in err
    )
    assert not (in_tmp / "out").exists()


def test_cli_checks_only_what_the_mode_loads_and_names_the_cli_flag(in_tmp, synth, tiny_ckpts, capsys):
    # fill_memory builds no SAM2: its missing file is not a problem; the encoder mismatch is.
    cfg = oracle_yaml(in_tmp / "c.yaml", synth, class_path=REAL_MODEL)
    msg = expect_user_error(
        capsys,
        [*base(cfg), "--model.test_mode", "fill_memory", "--out_path", in_tmp / "m.ckpt",
         "--model.init_args.model_cfg.sam2_ckpt_path", in_tmp / "no_sam2.pt",
         "--model.init_args.model_cfg.encoder_ckpt_path", tiny_ckpts["dinov2"]],
        "1 checkpoint problem:", "pass --model.init_args.model_cfg.encoder_cfg.name dinov2_small",
    )  # fmt: skip
    assert "no_sam2.pt" not in msg and not (in_tmp / "m.ckpt").exists()


def test_cuda_without_a_gpu_is_one_line_in_each_callers_words(in_tmp, tiny_ckpts, capsys, monkeypatch):
    import torch

    from no_time_to_train.api import FewShotSegmenter
    from no_time_to_train.cli.segment_image import main
    from no_time_to_train.errors import UserInputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        UserInputError, match=r"^device='cuda': this machine has no usable CUDA GPU.*device='cpu'"
    ):
        FewShotSegmenter.from_checkpoints(["a"], preset="small", device="cuda")
    assert (
        main(["--memory", "m.ckpt", "--classes", "a", "--images", "x.png", "--out", "o", "--device", "cuda"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("error: --device cuda: this machine has no usable CUDA GPU")
        and "--device cpu" in err[-1]
    )
    assert "Traceback" not in "\n".join(err)


def test_flags_are_never_matched_by_a_prefix(in_tmp, capsys):
    from no_time_to_train.cli.segment_image import main

    from ..helpers import expect_user_error

    with pytest.raises(SystemExit):  # argparse's usage error, not --points-per-side 8
        main(["--memory", "m.ckpt", "--images", "x.png", "--out", "o", "--points-per-sid", "8"])
    assert "unrecognized arguments: --points-per-sid" in capsys.readouterr().err
    expect_user_error(capsys, ["test", "--model.init_args.model_cfg.sam2_infer_cfgs.points_per_sid", "8"],
                      "Did you mean `points_per_side`")  # fmt: skip
