"""The Python API and the CLI run one implementation: same references -> identical bank tensors,
same target -> identical detections; and the API's autocast reaches inside the networks."""

from __future__ import annotations

import json

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import nn

from no_time_to_train.api import FewShotSegmenter
from no_time_to_train.config import ModelCfg
from no_time_to_train.data.reference_sets import load_reference_pkl

from ..conftest import FEWSHOT_CFG, run_cli
from ..e2e.test_oracle_e2e import _oracle_config
from ..oracle import GREYS, ColorEncoder, ColorProposer


def _oracle_api(synth, **kw) -> FewShotSegmenter:
    colors = [tuple(synth["class_colors"][c]) for c in synth["category_ids"]]
    distract = [tuple(c) for c in synth["distractor_colors"]]
    return FewShotSegmenter(
        list(synth["class_names"]),  # ascending category id: the CLI's class order
        device="cpu",
        encoder=ColorEncoder(colors + distract + GREYS),
        proposer=ColorProposer(colors + distract),
        **kw,
    )


def test_api_and_cli_give_identical_banks_and_detections(tmp_path, synth, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Annotation boxes a little larger than the masks' tight boxes (as COCO's often are), so that a
    # crop around the mask instead of the annotation box would change the bank.
    data = json.loads(open(synth["train_json"]).read())
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["bbox"] = [max(0.0, x - 3), max(0.0, y - 2), w + 5, h + 4]
    train_json = tmp_path / "train_loose_boxes.json"
    train_json.write_text(json.dumps(data))
    # One thread count on both sides: BLAS may round differently with other thread counts (by an
    # ulp), and the count adapts to the machine's load when it is not fixed.
    base = [
        "test", "--config", FEWSHOT_CFG, "--config", _oracle_config(tmp_path, synth),
        "--model.init_args.dataset_cfgs.fill_memory.json_file", train_json,
        "--model.init_args.model_cfg.compute_cfgs.num_threads", "2",
    ]  # fmt: skip
    mem, post, res = tmp_path / "memory.ckpt", tmp_path / "post.ckpt", tmp_path / "results.json"
    run_cli([*base, "--model.test_mode", "fill_memory", "--out_path", mem])
    run_cli([*base, "--model.test_mode", "postprocess_memory", "--ckpt_path", mem, "--out_path", post])
    run_cli([*base, "--model.test_mode", "test", "--ckpt_path", post, "--export_result", res])

    # The same references through the API: image, mask and the annotation's box, in pkl order.
    cfg = ModelCfg()
    cfg.compute_cfgs.num_threads = 2
    seg = _oracle_api(synth, model_cfg=cfg)
    train = COCO(str(train_json))
    refs = load_reference_pkl(synth["reference_pkl"])
    for cat_id, name in zip(synth["category_ids"], synth["class_names"], strict=True):
        for entry in refs[cat_id]:
            ann = train.anns[entry["ann_ids"][0]]
            info = train.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            seg.add_reference(
                f"{synth['train_img_dir']}/{info['file_name']}", name,
                masks=train.annToMask(ann), boxes=[[x, y, x + w, y + h]],
            )  # fmt: skip
    seg.build_memory()

    cli_bank = torch.load(post, map_location="cpu", weights_only=True)["state_dict"]
    api_bank = seg.segmenter.memory.state_dict()
    compared = 0
    for key, value in api_bank.items():
        if key == "mem_cat_ids":  # the API has class names, not COCO ids
            continue
        cli_value = cli_bank["memory." + key]
        assert cli_value.dtype == value.dtype and torch.equal(cli_value, value), key
        compared += value.numel()
    assert compared > 300 and api_bank["mem_feats_ins_avg"].abs().sum() > 0

    # The same targets through predict: identical scores, classes, boxes and masks.
    cli_results = json.loads(res.read_text())
    val = COCO(synth["val_json"])
    id_of = dict(enumerate(synth["category_ids"]))
    n_dets = 0
    for img_id in sorted(val.getImgIds()):
        info = val.imgs[img_id]
        pred = seg.predict(f"{synth['val_img_dir']}/{info['file_name']}")
        cli = [r for r in cli_results if r["image_id"] == img_id]
        assert [r["score"] for r in cli] == [float(s) for s in pred.scores]
        assert [r["category_id"] for r in cli] == [id_of[int(c)] for c in pred.labels]
        for r, box, mask in zip(cli, pred.boxes.tolist(), pred.masks, strict=True):
            x1, y1, x2, y2 = box
            assert r["bbox"] == [x1, y1, x2 - x1, y2 - y1]
            assert np.array_equal(val.annToMask({**r, "image_id": img_id}).astype(bool), mask)
        n_dets += len(cli)
    assert n_dets >= len(val.getImgIds())  # the oracle finds objects: the comparison is not vacuous


class _DtypeProbe(nn.Module):
    """Wraps a network and records the dtype a linear layer computes in during its forward: under
    autocast that is the autocast dtype, not the float32 of the inputs."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.probe, self.seen = inner, nn.Linear(3, 3), []
        self.feat_dim = getattr(inner, "feat_dim", None)
        self.image_size = getattr(inner, "image_size", None)  # the proposer contract

    def forward(self, images: torch.Tensor):
        self.seen.append(self.probe(images[:, :, 0, :3].transpose(1, 2)).dtype)
        return self.inner(images)


def test_api_precision_autocasts_the_networks_in_reference_encoding_and_predict(synth):
    colors = [tuple(synth["class_colors"][c]) for c in synth["category_ids"]]
    distract = [tuple(c) for c in synth["distractor_colors"]]
    encoder = _DtypeProbe(ColorEncoder(colors + distract + GREYS))
    proposer = _DtypeProbe(ColorProposer(colors + distract))
    seg = FewShotSegmenter(
        list(synth["class_names"]), ModelCfg(encoder_precision="bf16"), "cpu", encoder, proposer
    )
    img = np.zeros((96, 96, 3), np.uint8)
    for i, name in enumerate(synth["class_names"]):
        img[:] = colors[i]
        seg.add_reference(img, name, masks=np.pad(np.ones((60, 60)), 18))
    assert encoder.seen and set(encoder.seen) == {torch.bfloat16}  # reference encoding
    encoder.seen.clear()
    pred = seg.predict(img)
    assert proposer.seen == [torch.bfloat16] and encoder.seen == [torch.bfloat16]  # predict
    assert pred.scores.dtype == np.float32  # matching stays float32
