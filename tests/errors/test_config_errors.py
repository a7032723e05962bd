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
