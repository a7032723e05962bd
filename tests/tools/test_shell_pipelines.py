"""``scripts/matching_cdfsod_pipeline.sh`` end to end on a generated CD-FSOD layout; the dataset
wrappers against a stub pipeline; argument checks of the other pipelines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from no_time_to_train.data.reference_sets import load_reference_pkl
from no_time_to_train.data.synthetic import generate_coco_dataset

from ..conftest import REPO, write_yaml
from .common import PY, SCRIPTS, run

# ----------------------------------------------------------------------------------------------
# Shell pipelines


def test_shell_scripts_parse():
    for script in sorted(SCRIPTS.glob("*.sh")):
        res = run(["bash", "-n", script], cwd=REPO)
        assert res.returncode == 0, f"{script.name}: {res.stderr}"


def mini_cdfsod(root: Path) -> Path:
    """``root/UODD`` laid out like a CD-FSOD dataset: box-only jsons, CD-FSOD class names and ids."""
    ds = root / "UODD"
    generate_coco_dataset(
        ds, n_train=2, n_val=1, class_names=("boat", "bird"), n_shot=1, train_dirname="train", val_dirname="test",
        min_size=128, max_size=160, empty_fraction=0, seed=1,
    )  # fmt: skip
    rename = {9: (1, "seacucumber"), 16: (2, "scallop")}
    for src, dst in (("instances_train.json", "1_shot.json"), ("instances_test.json", "test.json")):
        data = json.loads((ds / "annotations" / src).read_text())
        data["categories"] = [{"id": i, "name": n, "supercategory": "sea"} for i, n in rename.values()]
        for a in data["annotations"]:
            a["category_id"] = rename[a["category_id"]][0]
            del a["segmentation"], a["area"]
        (ds / "annotations" / dst).write_text(json.dumps(data))
        (ds / "annotations" / src).unlink()
    (ds / "annotations" / "references_1shot.pkl").unlink()
    return ds


def tiny_config(path: Path, ckpts: dict) -> str:
    return write_yaml(path, {
        "model": {"init_args": {
            "model_cfg": {
                "sam2_cfg_file": "sam2_hiera_t.yaml", "sam2_ckpt_path": ckpts["sam2"],
                "encoder_cfg": {"name": "dinov2_small"}, "encoder_ckpt_path": ckpts["dinov2"],
                "sam2_infer_cfgs": {"points_per_side": 4, "testing_point_bs": 8},
            },
            "data_load_cfgs": {"workers": 0},
        }},
        "trainer": {"devices": 1, "accelerator": "cpu"},
    })  # fmt: skip


@pytest.mark.slow  # about 40 s on an idle 2-core CPU, over 60 s when the machine is busy
def test_cdfsod_pipeline_end_to_end(tmp_path, tiny_ckpts):
    ds = mini_cdfsod(tmp_path / "cd-fsod")
    work = tmp_path / "run"
    work.mkdir()
    env = {
        "CDFSOD_ROOT": str(tmp_path / "cd-fsod"), "PYTHON": PY, "SAM_CHECKPOINT": tiny_ckpts["sam2"],
        "EXTRA_CONFIG": tiny_config(tmp_path / "tiny.yaml", tiny_ckpts),
    }  # fmt: skip
    cmd = ["bash", SCRIPTS / "matching_cdfsod_pipeline.sh", "UODD", "1", "0", "seacucumber,scallop", "2"]
    res = run(cmd, cwd=work, env=env)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])

    ann = ds / "annotations"
    for name in ("1_shot", "test"):
        raw = json.loads((ann / f"{name}.json").read_text())
        segm = json.loads((ann / f"{name}_with_segm.json").read_text())
        assert segm["images"] == raw["images"] and len(segm["annotations"]) == len(raw["annotations"])
        assert all(a["segmentation"] and a["area"] > 0 for a in segm["annotations"])
    assert list((ann / "1_shot_with_SAM_segm").glob("*_segm.png"))  # references are visualised

    refs = load_reference_pkl(ann / "1_shot_with_segm.pkl")
    assert sorted(refs) == [1, 2] and all(len(v) == 1 for v in refs.values())
    ckpts = work / "tmp_ckpts" / "cd_fsod" / "matching"
    assert (ckpts / "UODD_1_refs_memory.pth").is_file()
    assert (ckpts / "UODD_1_refs_memory_postprocessed.pth").is_file()
    results_dir = work / "work_dirs" / "cd_fsod" / "UODD" / "1shot"
    results = json.loads((results_dir / "results.json").read_text())
    assert isinstance(results, list) and all(r["category_id"] in (1, 2) for r in results)
    log = (results_dir / "test.log").read_text()
    assert "BBOX RESULTS" in log and "SEGM RESULTS" in log
    assert "box->mask: using existing" not in res.stdout  # both jsons were made by this run

    # Re-running the same dataset never recomputes existing masks, and SKIP_SEGM=1 requires them.
    (ann / "test_with_segm.json").unlink()
    res = run(cmd, cwd=work, env={**env, "SKIP_SEGM": "1"})
    assert res.returncode == 1 and "SKIP_SEGM=1 but" in res.stderr and "test_with_segm.json" in res.stderr


def test_cdfsod_pipeline_argument_checks(tmp_path):
    script = SCRIPTS / "matching_cdfsod_pipeline.sh"
    res = run(["bash", script, "UODD", "1"], cwd=tmp_path)
    assert res.returncode == 2 and "DATASET_NAME SHOT DEVICES CAT_NAMES CATEGORY_NUM" in res.stderr
    res = run(["bash", script, "UODD", "1", "0", "a,b,c", "2", tmp_path], cwd=tmp_path)
    assert res.returncode == 1 and "CAT_NAMES lists 3 class(es) but CATEGORY_NUM is 2" in res.stderr
    res = run(["bash", script, "UODD", "1", "0", "a", "1"], cwd=tmp_path, env={"CDFSOD_ROOT": str(tmp_path)})
    assert res.returncode == 1 and f"dataset folder not found: {tmp_path}/UODD" in res.stderr
    res = run(["bash", script, "UODD", "one", "0", "a", "1"], cwd=tmp_path)
    assert res.returncode == 1 and "SHOT must be a positive integer" in res.stderr


@pytest.mark.parametrize(
    ("wrapper", "datasets"),
    [
        ("dior_fish.sh", {"DIOR": 20, "FISH": 1}),
        ("artaxor_clipart.sh", {"ArTaxOr": 7, "clipart1k": 20}),
        ("neu-det_uodd.sh", {"NEU-DET": 6, "UODD": 3}),
    ],
)
def test_cdfsod_wrappers_call_the_pipeline(tmp_path, wrapper, datasets):
    """Each wrapper runs the pipeline (with bash) for its datasets x shots with matching class counts."""
    shutil.copy(SCRIPTS / wrapper, tmp_path / wrapper)
    shutil.copytree(SCRIPTS / "lib", tmp_path / "lib")  # the shared loop the wrappers source
    (tmp_path / "matching_cdfsod_pipeline.sh").write_text('echo "$@" >> "$(dirname "$0")/calls.txt"\n')
    res = run(["bash", tmp_path / wrapper, "2,3"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    calls = [line.split(" ") for line in (tmp_path / "calls.txt").read_text().splitlines()]
    assert [(c[0], c[1]) for c in calls] == [(d, s) for d in datasets for s in ("1", "5", "10")]
    for name, _shot, devices, cat_names, num in calls:
        assert devices == "2,3" and len(cat_names.split(",")) == int(num) == datasets[name]
    (tmp_path / "calls.txt").unlink()
    first = next(iter(datasets))
    res = run(["bash", tmp_path / wrapper], cwd=tmp_path, env={"SHOTS": "5", "DATASETS": first})
    assert res.returncode == 0 and (tmp_path / "calls.txt").read_text().split(" ")[:3] == [first, "5", "0"]
    res = run(["bash", tmp_path / wrapper], cwd=tmp_path, env={"DATASETS": "COCO"})
    assert res.returncode == 2 and "unknown dataset 'COCO'" in res.stderr


def test_uodd_and_neu_det_class_lists():
    text = (SCRIPTS / "neu-det_uodd.sh").read_text()
    assert '[UODD]="seacucumber,seaurchin,scallop"' in text
    assert '[NEU-DET]="crazing,inclusion,patches,pitted_surface,rolled-in_scale,scratches"' in text


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("pascal_split.sh", ["4", "1"], "PASCAL_SPLIT must be 1, 2 or 3"),
        ("pascal_split.sh", ["1", "x"], "GPUS must be a positive number"),
        ("lvis_pipeline.sh", ["lvis_huge", "1"], "unknown LVIS split"),
        ("lvis_pipeline.sh", ["lvis_rare", "1,x"], "SHOTS must be positive integers"),
        ("few_shot_coco_semantic_pipeline.sh", ["5"], "COCO_SPLIT must be 1, 2, 3 or 4"),
    ],
)
def test_benchmark_pipeline_argument_checks(tmp_path, script, args, message):
    res = run(["bash", SCRIPTS / script, *args], cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr


@pytest.mark.parametrize(
    ("script", "args", "missing"),
    [
        ("pascal_split.sh", ["1", "1"], "data/pascal_voc/annotations/voc0712_trainval_with_segm.json"),
        ("lvis_pipeline.sh", ["lvis_rare", "1 5"], "data/lvis/lvis_v1_train.json"),
        ("few_shot_coco_semantic_pipeline.sh", ["1", "1"], "data/coco/annotations/instances_train2017.json"),
    ],
)
def test_benchmark_pipelines_name_missing_data(tmp_path, script, args, missing):
    res = run(["bash", SCRIPTS / script, *args], cwd=tmp_path)
    assert res.returncode == 1 and missing in res.stderr and "data/README.md" in res.stderr


@pytest.mark.parametrize(
    "name", ["matching_pascal_voc_few_shot_template.yaml", "matching_lvis_allClass.yaml"]
)
def test_new_templates_load(name):
    res = run([PY, "run_lightening.py", "test", "--config", f"no_time_to_train/pl_configs/{name}", "--print_config"],
              cwd=REPO)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
