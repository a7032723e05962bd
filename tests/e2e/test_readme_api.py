"""The README's Python API example, run as written (random-weight checkpoints at its paths)."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from no_time_to_train.tools.random_checkpoints import main as write_checkpoints

from ..conftest import REPO


def _readme_api_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_api_example_runs_as_written(tmp_path, synth, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert write_checkpoints(["--random-weights", "--dest", "checkpoints"]) == 0
    coco = COCO(synth["train_json"])
    ann = coco.loadAnns(coco.getAnnIds())[0]
    info = coco.imgs[ann["image_id"]]
    shutil.copy(os.path.join(synth["train_img_dir"], info["file_name"]), "boat.jpg")
    Image.fromarray(coco.annToMask(ann) * 255).save("boat_mask.png")
    Image.fromarray(np.full((240, 260, 3), 120, np.uint8)).save("bird.jpg")
    val = COCO(synth["val_json"])
    shutil.copy(
        os.path.join(synth["val_img_dir"], val.imgs[sorted(val.getImgIds())[0]]["file_name"]), "target.jpg"
    )

    ns: dict = {}
    exec(compile(_readme_api_example(), "README.md", "exec"), ns)

    target = Image.open("target.jpg")
    pred = ns["pred"]
    assert pred.masks.shape[1:] == (target.height, target.width)
    assert len(pred.scores) == len(pred.label_names) and set(pred.label_names) <= {"boat", "bird"}
    assert (tmp_path / "boat_bird_memory.ckpt").is_file()
    assert str(pred.masks.shape) in capsys.readouterr().out  # the example's print ran
