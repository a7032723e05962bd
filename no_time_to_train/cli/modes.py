"""The table of ``--model.test_mode`` values: one entry per mode, read by every hook and check.

An entry says which networks the mode builds, which data it reads, what it requires before it
starts (a memory file, a support set, the state of each bank), what one step does with one item,
what happens once every item is done, and which sinks (``output.sinks``) write its results.
Nothing outside this table compares a mode's name. Adding a mode is one :class:`Mode` entry in
:data:`MODES` and its step / finish functions (which receive the LightningModule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from no_time_to_train.output import sinks as S
from no_time_to_train.pipeline import references

BankState = Literal["empty", "filled", "postprocessed"]
Data = Literal["references", "targets", "support", "negatives", "bank"]


def _no_sinks(run: Any, out: S.RunOutputs) -> list[S.Sink]:
    return []


@dataclass(frozen=True)
class Mode:
    name: str
    summary: str
    data: Data
    """What the mode iterates over: ``references`` (dataset_cfgs.fill_memory's reference crops),
    ``targets`` (dataset_cfgs.test's images), ``support`` (dataset_cfgs.support's images),
    ``negatives`` (the crops of --out_neg_pkl / --out_neg_json) or ``bank`` (one pass over the bank)."""
    step: Callable[[Any, dict], Any]
    """``step(module, item) -> output`` for one item; the output goes to every sink."""
    encoder: bool = False
    """Builds the feature encoder."""
    proposer: bool = False
    """Builds the proposer (``model_cfg.proposer``)."""
    bank: BankState | None = None
    """State the positive bank must be in when the mode starts (None: any)."""
    negatives: Literal["fresh", "filled", "scoring"] | None = None
    """The negative bank: ``fresh`` starts a new empty one, ``filled`` requires a filled one,
    ``scoring`` requires a postprocessed one when ``sam2_infer_cfgs.with_negative_refs`` is set."""
    needs_ckpt: bool = False
    """Requires --ckpt_path (beyond what ``bank`` implies, checked before any work)."""
    needs_support_cfg: bool = False
    """Requires ``dataset_cfgs.support``."""
    writes_memory: bool = False
    """Writes a memory file: requires --out_path."""
    input_flags: tuple[str, ...] = ()
    """Flags naming files the mode reads, which must exist (checked before any work)."""
    output_flags: tuple[str, ...] = ()
    """Flags naming files the mode writes (checked writable, and never an input, before any work)."""
    pictures: Callable[[Any], bool] = lambda cfg: False
    """Whether the mode draws pictures under results_analysis/ for a ``ModelCfg``."""
    finish: Callable[[Any, list], None] | None = None
    """``finish(module, outputs)`` with every step's output gathered from all processes, in
    dataset order (for modes that build something from all items, e.g. the bank)."""
    sinks: Callable[[Any, S.RunOutputs], list[S.Sink]] = field(default=_no_sinks)
    """The mode's outputs for a run and its output paths."""

    @property
    def reads_images(self) -> bool:
        return self.data in ("targets", "support")


# ---------------------------------------------------------------------- steps
def encode_reference(module: Any, item: dict) -> tuple[references.ReferenceEntry, int]:
    entry = references.encode_crop(module.segmenter, item["image"], item["mask"], item["class_idx"])
    return entry, item["slot"]


def postprocess_positive(module: Any, item: dict) -> None:
    if module.memory.is_postprocessed:
        print("The memory is already postprocessed; writing it unchanged.")
    else:
        module.memory.postprocess()


def postprocess_negative(module: Any, item: dict) -> None:
    if module.memory_neg.is_postprocessed:
        print("The negatives are already postprocessed; writing them unchanged.")
    else:
        module.memory_neg.postprocess()


def segment(module: Any, item: dict) -> Any:
    """Detections of one target; None for a file that could not be read (folder runs skip it)."""
    if "error" in item:
        return None
    return module.segmenter.predict(item["image"][None], tuple(item["ori_size"]))


def encode_for_picture(module: Any, item: dict) -> tuple[Any, Any]:
    device = module.memory.mem_feats_centers.device
    return module.segmenter.encode_references(item["image"][None].to(device), item["mask"][None].to(device))


# ---------------------------------------------------------------------- sinks per mode
def _memory_file(run: Any, out: S.RunOutputs) -> list[S.Sink]:
    return [S.MemoryFileSink(out.out_path)] if out.out_path else []


def _test_sinks(run: Any, out: S.RunOutputs) -> list[S.Sink]:
    opts = run.model_cfg.test
    inst = f"inst_to_segm/coco_inst_{out.results_name}_results.json" if out.results_name else None
    sinks: list[S.Sink] = []
    if getattr(run.dataset, "has_ground_truth", True):
        sinks += [
            S.CocoResultsSink(("Results", out.export_result), ("Results", inst)),
            S.CocoEvaluationSink(),
        ]
        if out.export_dataset:
            sinks.append(S.CocoDatasetSink(out.export_dataset, out.export_settings))
    else:  # a folder without ground truth: the results too come from the shards (constant memory)
        sinks.append(
            S.CocoDatasetSink(out.export_dataset, out.export_settings, results_json=out.export_result)
        )
    if opts.export_dir:
        sinks.append(S.ExportSink(opts.export_dir, opts.export_format))
    if opts.online_vis:
        sinks.append(S.PredictionPictureSink())
    return sinks


def _support_sinks(run: Any, out: S.RunOutputs) -> list[S.Sink]:
    return [S.CocoResultsSink(("Support results", out.out_support_res)), S.CocoEvaluationSink(),
            S.NegativeSamplingSink(out.out_neg_pkl, out.out_neg_json)]  # fmt: skip


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("fill_memory", "encode the reference set into the memory bank", data="references",
             step=encode_reference, encoder=True, bank="empty", writes_memory=True,
             finish=lambda module, outputs: module.fill_positive(outputs), sinks=_memory_file),
        Mode("postprocess_memory", "class statistics of a filled bank (means, k-means, PCA)", data="bank",
             step=postprocess_positive, bank="filled", writes_memory=True, sinks=_memory_file),
        Mode("vis_memory", "pictures of the references coloured by the bank's statistics", data="references",
             step=encode_for_picture, encoder=True, bank="postprocessed", pictures=lambda cfg: True,
             sinks=lambda run, out: [S.ReferencePictureSink()]),
        Mode("test", "segment the test images, write the results and report COCO AP", data="targets",
             step=segment, encoder=True, proposer=True, bank="postprocessed", negatives="scoring",
             output_flags=("export_result", "export_dataset"), pictures=lambda cfg: cfg.test.online_vis,
             sinks=_test_sinks),
        Mode("test_support", "segment the support set and sample its false positives as negatives",
             data="support", step=segment, encoder=True, proposer=True, bank="postprocessed", needs_ckpt=True,
             needs_support_cfg=True, output_flags=("out_support_res", "out_neg_pkl", "out_neg_json"),
             sinks=_support_sinks),
        Mode("fill_memory_neg", "encode the negative references into the negative bank", data="negatives",
             step=encode_reference, encoder=True, bank="postprocessed", negatives="fresh", needs_ckpt=True,
             needs_support_cfg=True, writes_memory=True, input_flags=("out_neg_pkl", "out_neg_json"),
             finish=lambda module, outputs: module.fill_negative(outputs), sinks=_memory_file),
        Mode("postprocess_memory_neg", "class statistics of the filled negative bank", data="bank",
             step=postprocess_negative, negatives="filled", writes_memory=True, sinks=_memory_file),
    )
}  # fmt: skip

MODE_NAMES = tuple(MODES)


def mode_of(name: str) -> Mode | None:
    """The entry of ``name``; None for ``none`` (no mode chosen)."""
    return MODES.get(name)
