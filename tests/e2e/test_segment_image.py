"""The one-image command on generated images (random-weight SAM2-t + DINOv2-S)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from no_time_to_train.cli.segment_image import main, read_reference_folder
from no_time_to_train.errors import DatasetError


def _reference_folder(tmp_path, synth) -> str:
    coco = COCO(synth["train_json"])
    root = tmp_path / "refs"
    for cat_id, name in zip(synth["category_ids"], synth["class_names"], strict=True):
        ann = coco.loadAnns(coco.getAnnIds(catIds=[cat_id]))[0]
        info = coco.imgs[ann["image_id"]]
        (root / name).mkdir(parents=True)
        shutil.copy(f"{synth['train_img_dir']}/{info['file_name']}", root / name / info["file_name"])
        stem = info["file_name"].rsplit(".", 1)[0]
        Image.fromarray(coco.annToMask(ann) * 255).save(root / name / f"{stem}_mask.png")
    return str(root)


def test_reference_folder_reads_instances_by_mask_value(tmp_path):
    d = tmp_path / "refs" / "boat"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(d / "a.jpg")
    m = np.zeros((20, 30), np.uint8)
    m[2:5, 2:5], m[10:15, 10:20] = 1, 2  # two instances
    Image.fromarray(m).save(d / "a_mask.png")
    ((name, path, masks),) = read_reference_folder(str(tmp_path / "refs"))
    assert name == "boat" and path.endswith("a.jpg") and masks.shape == (2, 20, 30)
    assert masks[0].sum() == 9 and masks[1].sum() == 50
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(d / "b.jpg")  # no mask next to it
    with pytest.raises(DatasetError, match="b_mask.png"):
        read_reference_folder(str(tmp_path / "refs"))


def test_segment_image_command(tmp_path, synth, tiny_ckpts, capsys):
    refs = _reference_folder(tmp_path, synth)
    val = COCO(synth["val_json"])
    info = val.imgs[sorted(val.getImgIds())[0]]
    target = f"{synth['val_img_dir']}/{info['file_name']}"
    common = ["--sam2-cfg", "sam2_hiera_t.yaml", "--sam2-ckpt", tiny_ckpts["sam2"], "--encoder", "dinov2_small",
              "--encoder-ckpt", tiny_ckpts["dinov2"], "--points-per-side", "4", "--device", "cpu",
              "--score-thr", "0.0", "--save-masks"]  # fmt: skip
    out = tmp_path / "out"
    mem = tmp_path / "mem.ckpt"
    assert (
        main(["--refs", refs, "--images", target, "--out", str(out), "--save-memory", str(mem), *common]) == 0
    )
    printed = capsys.readouterr()
    assert f"Memory written to {mem}" in printed.out
    assert "references: 100%" in printed.err and "targets: 100%" in printed.err  # progress bars
    stem = info["file_name"].rsplit(".", 1)[0]
    result = json.loads((out / f"{stem}.json").read_text())
    assert (result["height"], result["width"]) == (info["height"], info["width"])
    overlay = Image.open(out / f"{stem}_overlay.png")
    assert overlay.size == (info["width"], info["height"])
    # Random weights still propose (SAM2's predicted IoU is about 0.5 > iou_thr 0.4 for every
    # prompt) and the cosines to the prototypes are positive: at least one instance is written.
    assert result["instances"], result
    for inst in result["instances"]:
        assert inst["category_name"] in synth["class_names"] and 0 <= inst["score"] <= 1
    assert len(list(out.glob(f"{stem}_inst*.png"))) == len(result["instances"])
    # the saved memory reproduces the result without the references
    out2 = tmp_path / "out2"
    assert main(["--memory", str(mem), "--images", target, "--out", str(out2), *common]) == 0
    assert json.loads((out2 / f"{stem}.json").read_text()) == result


def test_images_accept_folders_and_globs(tmp_path):
    from no_time_to_train.cli.segment_image import expand_images

    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert expand_images([str(tmp_path)]) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]
    assert expand_images([str(tmp_path / "*.png"), str(tmp_path / "b.png")]) == [str(tmp_path / "b.png")]
    with pytest.raises(DatasetError, match=r"--images .*sub: no image there"):
        expand_images([str(tmp_path / "sub")])


def test_readme_segment_image_command_runs_as_written(tmp_path, monkeypatch):
    """The README's command on the quick start's data, with --preset random (nothing downloaded:
    the stand-ins are written on first use)."""
    import re
    import shlex

    from no_time_to_train.data.synthetic import generate_coco_dataset

    from ..conftest import REPO

    text = (REPO / "README.md").read_text()
    block = re.search(
        r"```bash\n(python -m no_time_to_train\.segment_image \\\n.*?--preset random)\n```", text, re.S
    )
    assert block, "README's segment_image command on the quick-start data"
    argv = shlex.split(block.group(1).replace("\\\n", " "))[3:]
    monkeypatch.chdir(tmp_path)
    generate_coco_dataset(tmp_path / "data" / "demo", n_train=6, n_val=1, class_names=("person", "car", "bird"),
                          n_shot=1, seed=0, min_size=96, max_size=128)  # fmt: skip
    assert main([*argv, "--device", "cpu"]) == 0
    out = tmp_path / "work_dirs" / "demo" / "segment_image"
    assert list(out.glob("*_overlay.png")) and list(out.glob("*.json"))
    assert (tmp_path / "checkpoints" / "random" / "sam2_hiera_tiny.pt").is_file()


def test_negatives_folder(tmp_path, synth, tiny_ckpts, capsys):
    import torch

    refs = _reference_folder(tmp_path, synth)
    # Negatives of the first class: the second class's reference, in a folder named like the first.
    names = list(synth["class_names"])
    neg = tmp_path / "negatives" / names[0]
    shutil.copytree(Path(refs) / names[1], neg)
    val = COCO(synth["val_json"])
    target = f"{synth['val_img_dir']}/{val.imgs[sorted(val.getImgIds())[0]]['file_name']}"
    common = ["--sam2-cfg", "sam2_hiera_t.yaml", "--sam2-ckpt", tiny_ckpts["sam2"], "--encoder", "dinov2_small",
              "--encoder-ckpt", tiny_ckpts["dinov2"], "--points-per-side", "2", "--device", "cpu"]  # fmt: skip
    mem = tmp_path / "m.ckpt"
    assert main(["--refs", refs, "--negatives", str(tmp_path / "negatives"), "--images", target,
                 "--out", str(tmp_path / "out"), "--save-memory", str(mem), *common]) == 0  # fmt: skip
    assert "negatives: 100%" in capsys.readouterr().err
    state = torch.load(mem, weights_only=True)
    assert state["state_dict"]["memory_neg.mem_fill_counts"].tolist() == [
        int(c == names[0]) for c in sorted(names)
    ]
    assert state["no_time_to_train_memory"]["negatives"]["postprocessed"]
    # The saved memory keeps them: --memory predicts with the same negatives.
    out2 = tmp_path / "out2"
    assert main(["--memory", str(mem), "--images", target, "--out", str(out2), *common]) == 0
    stem = Path(target).stem
    assert json.loads((out2 / f"{stem}.json").read_text()) == json.loads(
        (tmp_path / "out" / f"{stem}.json").read_text()
    )
    shutil.copytree(Path(refs) / names[1], tmp_path / "neg2" / "unicorn")
    assert main(["--refs", refs, "--negatives", str(tmp_path / "neg2"), "--images", target,
                 "--out", str(tmp_path / "o3"), *common]) == 2  # fmt: skip
    assert "unicorn" in capsys.readouterr().err


def test_outputs_mirror_the_input_folders_and_never_collide(tmp_path, synth, tiny_ckpts, capsys):
    """Two flower.png in two folders give two results (named by their relative paths); two inputs
    that would write one output name are refused before any work; an unreadable one is skipped."""
    refs = _reference_folder(tmp_path, synth)
    common = ["--refs", refs, "--sam2-cfg", "sam2_hiera_t.yaml", "--sam2-ckpt", tiny_ckpts["sam2"],
              "--encoder", "dinov2_small", "--encoder-ckpt", tiny_ckpts["dinov2"], "--points-per-side", "2",
              "--device", "cpu", "--score-thr", "0.0"]  # fmt: skip
    batch = tmp_path / "batch"
    (batch / "sub").mkdir(parents=True)
    source = sorted(Path(synth["val_img_dir"]).iterdir())[0]
    shutil.copy(source, batch / "flower.png")
    shutil.copy(source, batch / "sub" / "flower.png")
    (batch / "sub" / "cut.png").write_bytes(source.read_bytes()[:200])
    out = tmp_path / "out"
    assert main([*common, "--images", str(batch), str(batch / "sub"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert json.loads((out / "flower.json").read_text())["image"] == "flower.png"
    assert json.loads((out / "sub" / "flower.json").read_text())["image"] == "sub/flower.png"
    assert "1 of 3 target(s) could not be read and were skipped" in printed and "cut.png" in printed
    shutil.copy(source, batch / "sub" / "flower.jpg")
    refused = tmp_path / "refused"
    assert main([*common, "--images", str(batch / "sub"), "--out", str(refused)]) == 2
    err = capsys.readouterr().err
    assert "flower.jpg and flower.png would write the same outputs" in err and not refused.exists()


def test_help_gives_every_flag_a_line_and_its_default(capsys):
    from no_time_to_train.cli.segment_image import build_parser

    parser = build_parser()
    for action in parser._actions:  # argparse's own list of the options
        assert action.help, action.option_strings
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--points-per-side POINTS_PER_SIDE prompt grid", "(default: 32)", "(default: 0.3)",
                  "(default: paper)", "(default: rle)"):  # fmt: skip
        assert shown in text, shown
