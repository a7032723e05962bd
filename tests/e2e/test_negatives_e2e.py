"""The negative-reference pipeline from the CLI, with the reference's mode names, on generated
data with confusers (unannotated shapes in a class's shade but another shape family):
fill -> postprocess -> test (baseline) -> test_support -> fill_memory_neg -> postprocess_memory_neg
-> test with with_negative_refs. Oracle encoder and proposals (``tests/oracle.py``)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from pycocotools.coco import COCO

from no_time_to_train.data.reference_sets import load_reference_pkl
from no_time_to_train.data.synthetic import generate_coco_dataset
from no_time_to_train.evaluation.coco_eval import evaluate_coco
from no_time_to_train.pipeline.negatives import false_positives

from ..conftest import FEWSHOT_CFG, dataset_overrides, run_cli, write_yaml

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
INFER = "--model.init_args.model_cfg.sam2_infer_cfgs.with_negative_refs"


def _config(tmp_path, d) -> str:
    ids = d["category_ids"]
    data = dataset_overrides(d)
    data["support"] = {"root": d["train_img_dir"], "json_file": d["train_json"]}
    cfg = {"model": {"class_path": "tests.oracle.OracleMatcherModel", "init_args": {
        "class_colors": [list(d["class_colors"][c]) for c in ids],
        "distractor_colors": [list(c) for c in d["distractor_colors"]],
        "confuser_colors": [list(d["confuser_colors"][c]) for c in ids if c in d["confuser_colors"]],
        "model_cfg": {"memory_bank_cfg": {"category_num": len(ids), "length": 2, "length_negative": 10}},
        "dataset_cfgs": data, "data_load_cfgs": {"workers": 0}}},
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "callbacks": []}}  # fmt: skip
    return write_yaml(tmp_path / "negatives.yaml", cfg)


def _ap(val_json: str, results_path) -> dict:
    val = COCO(val_json)
    with contextlib.redirect_stdout(io.StringIO()):
        stats, _ = evaluate_coco(val, json.loads(results_path.read_text()), verbose=False)
    return {t: stats[t]["AP"] for t in ("bbox", "segm")}


def run_pipeline(tmp_path, d) -> dict:
    base = ["test", "--config", FEWSHOT_CFG, "--config", _config(tmp_path, d)]
    out = {k: tmp_path / f for k, f in (("mem", "memory.ckpt"), ("post", "post.ckpt"), ("res", "results.json"),
           ("sup", "support_results.json"), ("pkl", "negatives.pkl"), ("js", "negatives.json"),
           ("neg", "neg.ckpt"), ("negpost", "neg_post.ckpt"), ("res_neg", "results_neg.json"))}  # fmt: skip
    neg_args = ["--out_neg_pkl", out["pkl"], "--out_neg_json", out["js"]]
    run_cli([*base, "--model.test_mode", "fill_memory", "--out_path", out["mem"]])
    run_cli(
        [
            *base,
            "--model.test_mode",
            "postprocess_memory",
            "--ckpt_path",
            out["mem"],
            "--out_path",
            out["post"],
        ]
    )
    run_cli([*base, "--model.test_mode", "test", "--ckpt_path", out["post"], "--export_result", out["res"]])
    run_cli([*base, "--model.test_mode", "test_support", "--ckpt_path", out["post"],
             "--out_support_res", out["sup"], *neg_args])  # fmt: skip
    run_cli([*base, "--model.test_mode", "fill_memory_neg", "--ckpt_path", out["post"], "--out_path", out["neg"],
             *neg_args])  # fmt: skip
    run_cli([*base, "--model.test_mode", "postprocess_memory_neg", "--ckpt_path", out["neg"],
             "--out_path", out["negpost"]])  # fmt: skip
    run_cli([*base, "--model.test_mode", "test", "--ckpt_path", out["negpost"], INFER, "True",
             "--export_result", out["res_neg"]])  # fmt: skip
    return out


def test_negative_pipeline_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = generate_coco_dataset(tmp_path / "data", n_train=20, n_val=10, class_names=("person", "car", "bird"),
                              n_shot=2, seed=3, confusers=3)  # fmt: skip
    out = run_pipeline(tmp_path, d)
    # test_support: raw results, and at most length_negative false positives per class.
    support = json.loads(out["sup"].read_text())
    train = COCO(d["train_json"])
    refs = load_reference_pkl(out["pkl"])
    negs = json.loads(out["js"].read_text())
    assert set(refs) == set(d["category_ids"]) and all(len(v) <= 10 for v in refs.values())
    assert sum(len(v) for v in refs.values()) == len(negs["annotations"]) > 0
    fp = set(false_positives(train, support, d["category_ids"]))
    sampled = {(a["image_id"], round(a["score"], 6)) for a in negs["annotations"]}
    assert sampled <= {(support[i]["image_id"], round(support[i]["score"], 6)) for i in fp}
    # One memory file holds both banks; its meta records the negatives.
    ckpt = torch.load(out["negpost"], map_location="cpu", weights_only=True)
    assert any(k.startswith("memory_neg.") for k in ckpt["state_dict"])
    meta = ckpt["no_time_to_train_memory"]["negatives"]
    assert meta["postprocessed"] and meta["length"] == 10
    assert meta["counts"] == [len(refs[c]) for c in d["category_ids"]]
    # AP without and with negatives (README, Negative references: measured 0.613 -> 0.669 segm,
    # 0.579 -> 0.628 bbox on this dataset; on other seeds of the generator the gain is smaller).
    ap0, ap1 = _ap(d["val_json"], out["res"]), _ap(d["val_json"], out["res_neg"])
    print(
        f"confusers: segm AP {ap0['segm']:.3f} -> {ap1['segm']:.3f}, bbox AP {ap0['bbox']:.3f} -> {ap1['bbox']:.3f}"
    )
    assert ap1["segm"] >= ap0["segm"] + 0.03 and ap1["bbox"] >= ap0["bbox"] + 0.03


def test_negatives_do_not_lower_ap_without_confusers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = generate_coco_dataset(tmp_path / "data", n_train=20, n_val=10, class_names=("person", "car", "bird"),
                              n_shot=2, seed=3)  # fmt: skip
    d["confuser_colors"] = {}  # none drawn
    out = run_pipeline(tmp_path, d)
    ap0, ap1 = _ap(d["val_json"], out["res"]), _ap(d["val_json"], out["res_neg"])
    print(
        f"no confusers: segm AP {ap0['segm']:.3f} -> {ap1['segm']:.3f}, bbox AP {ap0['bbox']:.3f} -> {ap1['bbox']:.3f}"
    )
    assert ap1["segm"] >= ap0["segm"] - 0.005 and ap1["bbox"] >= ap0["bbox"] - 0.005


def test_modes_refuse_missing_inputs(tmp_path, monkeypatch, capsys):
    from ..helpers import expect_user_error

    monkeypatch.chdir(tmp_path)
    d = generate_coco_dataset(tmp_path / "data", n_train=6, n_val=2, class_names=("person", "car", "bird"),
                              n_shot=2, seed=0)  # fmt: skip
    base = ["test", "--config", FEWSHOT_CFG, "--config", _config(tmp_path, d)]
    expect_user_error(capsys, [*base, "--model.test_mode", "test_support"], "--ckpt_path")
    import yaml

    no_support = yaml.safe_load(open(base[4]))
    del no_support["model"]["init_args"]["dataset_cfgs"]["support"]
    cfg2 = write_yaml(tmp_path / "no_support.yaml", no_support)
    expect_user_error(capsys, ["test", "--config", FEWSHOT_CFG, "--config", cfg2, "--model.test_mode", "test_support",
                               "--ckpt_path", tmp_path / "x.ckpt"], "set dataset_cfgs.support")  # fmt: skip
    expect_user_error(capsys, [*base, "--model.test_mode", "fill_memory_neg", "--ckpt_path", tmp_path / "x.ckpt",
                               "--out_path", tmp_path / "n.ckpt"], "--ckpt_path")  # fmt: skip
    mem, post = tmp_path / "m.ckpt", tmp_path / "p.ckpt"
    run_cli([*base, "--model.test_mode", "fill_memory", "--out_path", mem])
    run_cli([*base, "--model.test_mode", "postprocess_memory", "--ckpt_path", mem, "--out_path", post])
    expect_user_error(capsys, [*base, "--model.test_mode", "fill_memory_neg", "--ckpt_path", post,
                               "--out_path", tmp_path / "n.ckpt"], "--out_neg_pkl", "test_support")  # fmt: skip
    expect_user_error(capsys, [*base, "--model.test_mode", "test", "--ckpt_path", post, INFER, "True"],
                      "with_negative_refs True needs a memory file with postprocessed negatives",
                      "fill_memory_neg")  # fmt: skip


@pytest.mark.slow
def test_negative_modes_on_two_processes_match_one(tmp_path, monkeypatch):
    """test_support and fill_memory_neg with 2 CPU processes (gloo DDP): the same negatives and
    the same negative bank as with one (odd image counts: the sampler pads with repeats)."""
    import os
    import subprocess
    import sys

    from ..conftest import REPO

    monkeypatch.chdir(tmp_path)
    d = generate_coco_dataset(tmp_path / "data", n_train=7, n_val=1, class_names=("person", "car", "bird"),
                              n_shot=2, seed=3, confusers=3)  # fmt: skip
    cfg = _config(tmp_path, d)
    base = ["test", "--config", FEWSHOT_CFG, "--config", cfg]
    mem, post = tmp_path / "m.ckpt", tmp_path / "p.ckpt"
    run_cli([*base, "--model.test_mode", "fill_memory", "--out_path", mem])
    run_cli([*base, "--model.test_mode", "postprocess_memory", "--ckpt_path", mem, "--out_path", post])
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    outs = {}
    for n in (1, 2):
        w = tmp_path / f"dev{n}"
        w.mkdir()
        ddp = ["--trainer.devices", str(n)] + (["--trainer.strategy", "ddp"] if n > 1 else [])
        neg = ["--out_neg_pkl", str(w / "neg.pkl"), "--out_neg_json", str(w / "neg.json")]
        for mode, extra in (("test_support", ["--out_support_res", str(w / "sup.json")]),
                            ("fill_memory_neg", ["--out_path", str(w / "neg.ckpt")])):  # fmt: skip
            proc = subprocess.run([sys.executable, str(REPO / "run_lightening.py"), *map(str, base), *ddp,
                                   "--model.test_mode", mode, "--ckpt_path", str(post), *neg, *extra],
                                  cwd=w, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        bank = torch.load(w / "neg.ckpt", weights_only=True)["state_dict"]
        outs[n] = (json.loads((w / "sup.json").read_text()), json.loads((w / "neg.json").read_text()), bank)
    (sup1, neg1, bank1), (sup2, neg2, bank2) = outs[1], outs[2]
    assert [r["image_id"] for r in sup1] == [r["image_id"] for r in sup2]  # no duplicated images
    assert [a["segmentation"] for a in neg1["annotations"]] == [
        a["segmentation"] for a in neg2["annotations"]
    ]
    assert neg1["annotations"] and bank1.keys() == bank2.keys()
    assert torch.equal(bank1["memory_neg.mem_fill_counts"], bank2["memory_neg.mem_fill_counts"])
    for k in bank1:
        assert torch.allclose(bank1[k].float(), bank2[k].float(), atol=1e-3), k


def _api_ap_with_and_without_negatives(tmp_path, seed: int) -> tuple[dict, dict]:
    """The Python API on a confuser dataset: references from the pickle, negatives sampled from the
    train split's false positives (as test_support does), AP on the val split."""
    import pycocotools.mask as mask_utils

    from no_time_to_train.api import FewShotSegmenter
    from no_time_to_train.evaluation.coco_results import encode_detections
    from no_time_to_train.pipeline.negatives import sample_negatives

    from ..oracle import GREYS, ColorEncoder, ColorProposer

    d = generate_coco_dataset(tmp_path / f"d{seed}", n_train=20, n_val=10, class_names=("person", "car", "bird"),
                              n_shot=2, seed=seed, confusers=3)  # fmt: skip
    ids = d["category_ids"]
    cols = [tuple(d["class_colors"][c]) for c in ids]
    dist = [tuple(c) for c in d["distractor_colors"]]
    seg = FewShotSegmenter(list(d["class_names"]), device="cpu", proposer=ColorProposer(cols + dist),
                           encoder=ColorEncoder(cols + dist + [tuple(d["confuser_colors"][c]) for c in ids] + GREYS))  # fmt: skip
    seg.progress = False
    train, val = COCO(d["train_json"]), COCO(d["val_json"])
    refs = load_reference_pkl(d["reference_pkl"])
    for cid, name in zip(ids, d["class_names"], strict=True):
        for e in refs[cid]:
            ann = train.anns[e["ann_ids"][0]]
            x, y, w, h = ann["bbox"]
            seg.add_reference(f"{d['train_img_dir']}/{train.imgs[ann['image_id']]['file_name']}", name,
                              masks=train.annToMask(ann), boxes=[[x, y, x + w, y + h]])  # fmt: skip

    def results(coco, img_dir):
        out = []
        for img_id in sorted(coco.getImgIds()):
            p = seg.predict(f"{img_dir}/{coco.imgs[img_id]['file_name']}")
            out += encode_detections(torch.from_numpy(p.masks), torch.from_numpy(p.boxes), torch.from_numpy(p.scores),
                                     torch.from_numpy(p.labels), img_id, dict(enumerate(ids)))  # fmt: skip
        return out

    def ap(res):
        with contextlib.redirect_stdout(io.StringIO()):
            stats, _ = evaluate_coco(val, res, verbose=False)
        return {t: stats[t]["AP"] for t in ("bbox", "segm")}

    before = ap(results(val, d["val_img_dir"]))
    _, negs = sample_negatives(train, results(train, d["train_img_dir"]), ids, 10, 0.2)
    for a in negs["annotations"]:
        mask = mask_utils.decode(
            {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
        )
        x, y, w, h = a["bbox"]
        seg.add_negative(f"{d['train_img_dir']}/{train.imgs[a['image_id']]['file_name']}",
                         d["class_names"][ids.index(a["category_id"])], masks=mask, boxes=[[x, y, x + w, y + h]])  # fmt: skip
    return before, ap(results(val, d["val_img_dir"]))


@pytest.mark.slow
def test_negatives_gain_over_generator_seeds(tmp_path):
    """Six confuser datasets: AP with negatives minus without (README's table). The gain is uneven
    (about 0 on half the seeds); the floors are on the mean and on the worst seed."""
    gains = {"segm": [], "bbox": []}
    for seed in range(6):
        before, after = _api_ap_with_and_without_negatives(tmp_path, seed)
        print(
            f"seed {seed}: segm {before['segm']:.3f} -> {after['segm']:.3f}, bbox {before['bbox']:.3f} -> {after['bbox']:.3f}"
        )
        for t in gains:
            gains[t].append(after[t] - before[t])
    for t, g in gains.items():
        assert sum(g) / len(g) >= 0.01, (t, g)  # +1 AP point on average (measured: +1.5)
        assert min(g) >= -0.005, (t, g)  # no seed loses more than half a point
