"""Labelling a folder of unlabelled images: the CLI's test without a json, --export_dataset, the
Python API's label_folder and segment_image --coco-out; resuming after SIGKILL / SIGTERM; two nodes
on one machine; bad files skipped and listed; a third-party library importing the dataset."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from ..conftest import FEWSHOT_CFG, REPO, dataset_overrides, run_cli, write_yaml
from ..helpers import base, expect_user_error, oracle_yaml

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def make_folder(synth: dict, root: Path) -> dict[str, str]:
    """The validation images as a user's folder: some in a sub-folder, one copied under the same
    name into another folder, a text file, and a truncated image. {relative path: original}."""
    names = sorted(os.listdir(synth["val_img_dir"]))
    placed = {}
    for i, name in enumerate(names):
        rel = name if i % 2 == 0 else f"sub/{name}"
        placed[rel] = name
    placed[f"sub/deeper/{names[0]}"] = names[0]  # same file name, another folder
    for rel, name in placed.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(synth["val_img_dir"], name), root / rel)
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "broken.png").write_bytes((root / next(iter(placed))).read_bytes()[:300])
    return placed


def folder_cfg(path: Path, synth: dict, root: Path, cls: str | None = None, **model_cfg) -> str:
    data = dataset_overrides(synth)
    data["test"] = {"root": str(root), "json_file": None}
    kwargs = {"class_path": cls} if cls else {}
    return oracle_yaml(path, synth, model_cfg={"memory_bank_cfg": {"length": 1}, **model_cfg}, dataset_cfgs=data,
                       **kwargs)  # fmt: skip


def _by_file(ds: dict) -> dict[str, list[tuple]]:
    """{file_name: [(category, bbox, score, rle counts), ...]} of a COCO dataset json."""
    names = {i["id"]: i["file_name"] for i in ds["images"]}
    out: dict[str, list[tuple]] = {n: [] for n in names.values()}
    for a in ds["annotations"]:
        seg = a["segmentation"]
        out[names[a["image_id"]]].append((a["category_id"], tuple(a["bbox"]), a["score"], seg["counts"]))
    return out


def test_the_cli_labels_a_folder_like_it_segments_the_json(bank, synth, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "photos"
    placed = make_folder(synth, root)
    # The same images with their json (ground truth): the reference detections.
    gt_cfg = oracle_yaml(tmp_path / "gt.yaml", synth, model_cfg={"memory_bank_cfg": {"length": 1}})
    run_cli(
        [*base(gt_cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_dataset", "gt.json"]
    )
    cfg = folder_cfg(tmp_path / "folder.yaml", synth, root)
    run_cli([*base(cfg), "--model.test_mode", "test", "--ckpt_path", bank.post,
             "--export_dataset", "out/labels.json", "--export_result", "out/results.json"])  # fmt: skip
    ds = json.loads((tmp_path / "out" / "labels.json").read_text())
    want = _by_file(json.loads((tmp_path / "gt.json").read_text()))
    got = _by_file(ds)
    # Every image, by its relative path (the two copies of one name both), in sorted order.
    assert [i["file_name"] for i in ds["images"]] == sorted(placed)
    # Ids are the positions in the sorted listing (the skipped file keeps its slot): stable on resume.
    listing = sorted([*placed, "sub/broken.png"])
    assert [i["id"] for i in ds["images"]] == [listing.index(i["file_name"]) + 1 for i in ds["images"]]
    assert {rel: got[rel] for rel in placed} == {rel: want[orig] for rel, orig in placed.items()}
    assert sum(map(len, got.values())) > 10  # the oracle finds the objects
    # Classes and ids from the memory file.
    assert [(c["id"], c["name"]) for c in ds["categories"]] == list(
        zip(synth["category_ids"], synth["class_names"], strict=True)
    )
    # pycocotools loads it as ground truth; masks decode to their areas.
    coco = COCO(str(tmp_path / "out" / "labels.json"))
    for ann in coco.loadAnns(coco.getAnnIds()[:5]):
        assert coco.annToMask(ann).sum() == ann["area"] and ann["iscrowd"] == 0 and 0 <= ann["score"] <= 1
    # The results json holds the same detections; the broken file is listed with its reason.
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())) == len(ds["annotations"])
    skipped = (tmp_path / "out" / "labels.json.skipped.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith("sub/broken.png\t") and "truncated" in skipped[0]


def test_a_third_party_library_imports_the_dataset_with_its_masks(bank, synth, tmp_path, monkeypatch):
    import supervision as sv

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "photos"
    make_folder(synth, root)
    cfg = folder_cfg(tmp_path / "folder.yaml", synth, root)
    for fmt in ("rle", "polygon"):
        out = tmp_path / f"labels_{fmt}.json"
        run_cli([*base(cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_dataset", out,
                 "--export_segmentation", fmt, "--export_score_thr", "0.3", "--export_max_dets", "5"])  # fmt: skip
        coco = json.loads(out.read_text())
        assert all(a["score"] >= 0.3 for a in coco["annotations"])
        assert max(np.bincount([a["image_id"] for a in coco["annotations"]])) <= 5
        data = sv.DetectionDataset.from_coco(images_directory_path=str(root), annotations_path=str(out),
                                             force_masks=True)  # fmt: skip
        assert len(data) == len(coco["images"]) and data.classes == list(synth["class_names"])
        total = 0
        for path, _, det in data:
            rel = Path(path).relative_to(root).as_posix()
            anns = [a for a in coco["annotations"] if a["image_id"] == _image_id(coco, rel)]
            assert len(det) == len(anns) and (det.mask is not None or not anns)
            if not anns:
                continue
            if fmt == "rle":  # exact: the masks' pixel counts are the annotations' areas
                assert sorted(det.mask.sum(axis=(1, 2)).tolist()) == sorted(a["area"] for a in anns)
            total += len(det)
        assert total == len(coco["annotations"]) > 0


def _image_id(coco: dict, rel: str) -> int:
    return next(i["id"] for i in coco["images"] if i["file_name"] == rel)


def test_bad_folders_and_outputs_stop_at_once(bank, synth, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = folder_cfg(tmp_path / "e.yaml", synth, empty)
    run = [*base(cfg), "--model.test_mode", "test", "--ckpt_path", bank.post]
    expect_user_error(capsys, [*run, "--export_dataset", "o.json"], "no image", str(empty))
    (empty / "readme.md").write_text("no images here")
    expect_user_error(capsys, [*run, "--export_dataset", "o.json"], "no image")
    expect_user_error(capsys, [*run, "--export_dataset", "o.json",
                               "--model.init_args.dataset_cfgs.test.root", tmp_path / "missing"], "no such folder")  # fmt: skip
    root = tmp_path / "photos"
    placed = make_folder(synth, root)
    cfg = folder_cfg(tmp_path / "f.yaml", synth, root)
    run = [*base(cfg), "--model.test_mode", "test", "--ckpt_path", bank.post]
    expect_user_error(capsys, run, "--export_dataset OUT.json")
    victim = root / next(iter(placed))
    expect_user_error(capsys, [*run, "--export_dataset", victim], "is one of the target images")
    listing = tmp_path / "list.txt"
    listing.write_text("sub/nothing.png\n")
    expect_user_error(capsys, [*run, "--export_dataset", "o.json", "--model.init_args.dataset_cfgs.test.images",
                               listing], "not found under", "sub/nothing.png")  # fmt: skip
    assert not victim.with_suffix(".png.parts").exists() and not Path("o.json").exists()


def test_a_glob_or_a_list_selects_the_images(bank, synth, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "photos"
    placed = make_folder(synth, root)
    cfg = folder_cfg(tmp_path / "f.yaml", synth, root)
    # The README's flags: a config that names a json, turned into a folder run on the command line.
    with_json = oracle_yaml(tmp_path / "j.yaml", synth, model_cfg={"memory_bank_cfg": {"length": 1}})
    run_cli([*base(with_json), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_dataset", "g.json",
             "--model.init_args.dataset_cfgs.test.root", root, "--model.init_args.dataset_cfgs.test.json_file", "null",
             "--model.init_args.dataset_cfgs.test.images", "sub/**/*.png"])  # fmt: skip
    subs = sorted(r for r in placed if r.startswith("sub/"))
    assert [i["file_name"] for i in json.loads(Path("g.json").read_text())["images"]] == subs
    listing = tmp_path / "two.txt"
    listing.write_text(f"# two of them\n{subs[1]}\n\n{subs[0]}\n")
    run_cli([*base(cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_dataset", "l.json",
             "--model.init_args.dataset_cfgs.test.images", listing])  # fmt: skip
    assert [i["file_name"] for i in json.loads(Path("l.json").read_text())["images"]] == subs[:2]


# ---------------------------------------------------------------------- stop and resume
def _cli(args: list, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.Popen([sys.executable, str(REPO / "run_lightening.py"), *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def _lines(out: Path) -> int:
    parts = Path(f"{out}.parts")
    return sum(p.read_text().count("\n") for p in parts.glob("shard-*.jsonl")) if parts.is_dir() else 0


def _stop_after(proc: subprocess.Popen, out: Path, lines: int, sig: int) -> None:
    deadline = time.time() + 300
    while _lines(out) < lines:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
    proc.communicate(timeout=120)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_stopped_run_resumes_to_the_uninterrupted_result(bank, synth, tmp_path, sig):
    root = tmp_path / "photos"
    placed = make_folder(synth, root)
    slow = folder_cfg(tmp_path / "slow.yaml", synth, root, cls="tests.oracle.SlowOracleMatcherModel")
    # One thread: BLAS sums in one order whatever else the machine runs, so the bytes can be compared
    # (with the default adaptive threads the figures agree to float rounding only).
    run = ["test", "--config", FEWSHOT_CFG, "--config", slow, "--model.init_args.delay", "0.4",
           "--model.test_mode", "test", "--ckpt_path", bank.post,
           "--model.init_args.model_cfg.compute_cfgs.num_threads", "1"]  # fmt: skip
    whole = tmp_path / "whole.json"
    done = _cli([*run, "--export_dataset", whole], tmp_path)
    assert done.wait(timeout=600) == 0, done.communicate()[1][-3000:]
    out = tmp_path / "labels.json"
    _stop_after(_cli([*run, "--export_dataset", out], tmp_path), out, 3, sig)
    first = _lines(out)
    assert 3 <= first < len(placed) + 1 and not out.exists()
    again = _cli([*run, "--export_dataset", out], tmp_path)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    assert f"{first} of {len(placed) + 1} images are done" in stdout
    assert out.read_text() == whole.read_text()  # byte-identical: no duplicate, no gap
    assert _lines(out) == len(placed) + 1  # each image processed once over both runs


def test_a_restart_with_other_settings_is_refused_unless_overwrite(
    bank, synth, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "photos"
    make_folder(synth, root)
    cfg = folder_cfg(tmp_path / "f.yaml", synth, root)
    run = [*base(cfg), "--model.test_mode", "test", "--ckpt_path", bank.post, "--export_dataset", "l.json"]
    run_cli(run)
    first = Path("l.json").read_text()
    Path("l.json").unlink()  # as if stopped after the last image, before the dataset was assembled
    run_cli(run)  # the same command again: every image is done, nothing is recomputed
    assert Path("l.json").read_text() == first
    assert sum(p.read_text().count("\n") for p in Path("l.json.parts").glob("shard-*")) == 8
    expect_user_error(capsys, [*run, "--export_score_thr", "0.5"], "other settings", "export.score_thr: 0.0 -> 0.5",
                      "--overwrite")  # fmt: skip
    expect_user_error(capsys, [*run, "--model.init_args.model_cfg.sam2_infer_cfgs.nms_thr", "0.3"],
                      "model_cfg.sam2_infer_cfgs.nms_thr: 0.5 -> 0.3")  # fmt: skip
    run_cli([*run, "--export_score_thr", "0.5", "--overwrite"])
    assert all(a["score"] >= 0.5 for a in json.loads(Path("l.json").read_text())["annotations"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_one_machine_equal_one_process(bank, synth, tmp_path):
    root = tmp_path / "photos"
    make_folder(synth, root)
    cfg = folder_cfg(tmp_path / "f.yaml", synth, root)
    # One thread per process in both runs: BLAS sums in the same order, so the bytes can be compared.
    run = ["test", "--config", FEWSHOT_CFG, "--config", cfg, "--model.test_mode", "test", "--ckpt_path", bank.post,
           "--model.init_args.model_cfg.compute_cfgs.num_threads", "1"]  # fmt: skip
    one = _cli([*run, "--export_dataset", tmp_path / "one.json"], tmp_path)
    assert one.wait(timeout=600) == 0, one.communicate()[1][-3000:]
    port = str(_free_port())
    nodes = [
        _cli([*run, "--export_dataset", tmp_path / "two.json", "--trainer.num_nodes", "2", "--trainer.devices", "1",
              "--trainer.strategy", "ddp"], tmp_path,
             {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(rank), "LOCAL_RANK": "0",
              "WORLD_SIZE": "2"})
        for rank in (0, 1)
    ]  # fmt: skip
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    assert (tmp_path / "two.json").read_text() == (tmp_path / "one.json").read_text()
    shards = list(Path(f"{tmp_path / 'two.json'}.parts").glob("shard-r*.jsonl"))
    assert {p.name.split("-")[1] for p in shards} == {"r0", "r1"}  # both nodes wrote


# ---------------------------------------------------------------------- API and segment_image
def test_the_api_and_segment_image_label_like_the_cli(tiny_ckpts, synth, tmp_path, monkeypatch):
    """Real (random-weight) SAM2-t and DINOv2-S: one memory, three entry points, one dataset."""
    from no_time_to_train.api import FewShotSegmenter
    from no_time_to_train.cli.segment_image import main as segment_image
    from no_time_to_train.data.reference_sets import load_reference_pkl

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "photos"
    names = sorted(os.listdir(synth["val_img_dir"]))[:3]
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(names):
        shutil.copy(os.path.join(synth["val_img_dir"], name), root / ("sub" if i else "") / name)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    classes = list(synth["class_names"])
    seg = FewShotSegmenter.from_checkpoints(classes, sam2_cfg="sam2_hiera_t.yaml", sam2_ckpt=tiny_ckpts["sam2"],
                                            encoder="dinov2_small", encoder_ckpt=tiny_ckpts["dinov2"], device="cpu",
                                            points_per_side=4)  # fmt: skip
    seg.progress = False
    coco = COCO(synth["train_json"])
    refs = load_reference_pkl(synth["reference_pkl"])
    for cat_id, name in zip(synth["category_ids"], classes, strict=True):
        ann = coco.anns[refs[cat_id][0]["ann_ids"][0]]
        path = os.path.join(synth["train_img_dir"], coco.imgs[ann["image_id"]]["file_name"])
        seg.add_reference(path, name, masks=coco.annToMask(ann))
    seg.save_memory("memory.ckpt")
    api_summary = seg.label_folder(str(root), "api.json")
    assert api_summary["images"] == 3 and [s[0] for s in api_summary["skipped"]] == ["broken.png"]
    assert segment_image(["--memory", "memory.ckpt", "--images", str(root), f"{root}/sub/*.png", "--out", "seg_out",
                          "--score-thr", "0", "--coco-out", "seg.json", "--sam2-cfg", "sam2_hiera_t.yaml",
                          "--sam2-ckpt", tiny_ckpts["sam2"], "--encoder", "dinov2_small",
                          "--encoder-ckpt", tiny_ckpts["dinov2"], "--points-per-side", "4", "--device", "cpu"]) == 0  # fmt: skip
    cfg = write_yaml(tmp_path / "tiny.yaml", {"model": {"init_args": {
        "model_cfg": {"sam2_cfg_file": "sam2_hiera_t.yaml", "sam2_ckpt_path": tiny_ckpts["sam2"],
                      "encoder_cfg": {"name": "dinov2_small"}, "encoder_ckpt_path": tiny_ckpts["dinov2"],
                      "memory_bank_cfg": {"category_num": 3, "length": 1},
                      "sam2_infer_cfgs": {"points_per_side": 4}},
        "dataset_cfgs": {"test": {"root": str(root), "json_file": None}}, "data_load_cfgs": {"workers": 0}}},
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "callbacks": []}})  # fmt: skip
    run_cli(["test", "--config", FEWSHOT_CFG, "--config", cfg, "--model.test_mode", "test",
             "--ckpt_path", "memory.ckpt", "--export_dataset", "cli.json"])  # fmt: skip
    api, seg_json, cli = (json.loads(Path(f).read_text()) for f in ("api.json", "seg.json", "cli.json"))
    assert [i["file_name"] for i in cli["images"]] == [names[0], f"sub/{names[1]}", f"sub/{names[2]}"]
    assert _comparable(api) == _comparable(cli) == _comparable(seg_json)
    assert sum(len(v) for v in _comparable(cli).values()) > 0


def _comparable(ds: dict) -> dict:
    """{file_name: sorted [(category, rounded box, rounded score, mask counts)]} (ids aside)."""
    names = {i["id"]: i["file_name"] for i in ds["images"]}
    out: dict[str, list] = {n: [] for n in names.values()}
    for a in ds["annotations"]:
        out[names[a["image_id"]]].append(
            (
                a["category_id"],
                tuple(round(v, 2) for v in a["bbox"]),
                round(a["score"], 4),
                a["segmentation"]["counts"],
            )
        )
    return {k: sorted(v) for k, v in out.items()}
