"""Configuration mistakes end in one short paragraph naming the key, the choices and the closest
match, not in jsonargparse's usage dump."""

from __future__ import annotations

import pytest

from ..conftest import FEWSHOT_CFG, run_cli


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--model.init_args.model_cfg.sam2_infer_cfgs.iou_thresh", "0.5"],
         ["--model.init_args.model_cfg.sam2_infer_cfgs.iou_thresh", "Did you mean `iou_thr`?", "nms_thr"]),
        (["--model.test_mode", "fill"], ["--model.test_mode fill: not one of", "Did you mean `fill_memory`?"]),
        (["--model.init_args.model_cfg.memory_bank_cfg.lenght", "3"], ["Did you mean `length`?"]),
        (["--model.init_args.model_cfg.sam2_infer_cfgs.iou_thr", "abc"],
         ["--model.init_args.model_cfg.sam2_infer_cfgs.iou_thr abc: expected a float"]),
    ],
    ids=["typo", "mode", "typo-nested", "type"],
)  # fmt: skip
def test_config_errors_are_short_and_name_the_close_match(args, needles, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["test", "--config", FEWSHOT_CFG, *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) <= 2, err
    for needle in needles:
        assert needle in err, err


def test_help_lists_the_model_keys_and_no_training_options(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["test", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for key in ("--model.test_mode", "--model.model_cfg.sam2_infer_cfgs.iou_thr",
                "--model.model_cfg.encoder_cfg.name", "--model.dataset_cfgs.fill_memory.memory_pkl"):  # fmt: skip
        assert key in out, key
    # The key's docstring is shown with it.
    assert "Point-grid prompts per image side" in out
    # The model keys come before Lightning's trainer options; no optimizer or scheduler section.
    assert out.index("\n  --model.test_mode {") < out.index("\n  --trainer.accelerator ")
    assert "--optimizer" not in out and "--lr_scheduler" not in out


def test_model_help_takes_the_short_class_name(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["test", "--model.help", "Sam2MatcherLightningModel"])
    assert exc.value.code == 0
    assert "--model.model_cfg.sam2_infer_cfgs.points_per_side" in capsys.readouterr().out


@pytest.mark.parametrize("sub", ["fit", "validate", "predict"])
def test_training_subcommands_are_refused_in_one_line(sub, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli([sub, "--config", FEWSHOT_CFG])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"`{sub}` is not a subcommand here" in err, err
    assert "--model.test_mode" in err
