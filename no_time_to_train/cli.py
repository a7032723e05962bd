"""``run_lightening.py``: LightningCLI in subclass mode with the reference's extra arguments.

After ``fill_memory`` / ``postprocess_memory`` the bank is written to ``--out_path`` (atomically,
bank only); after ``test`` the per-image results gathered from all ranks are optionally exported
(``--export_result``) and evaluated with COCOeval on rank 0.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pytorch_lightning.cli import LightningCLI

from .errors import UserInputError
from .io_utils import atomic_save_json

MEMORY_MODES = ("fill_memory", "postprocess_memory")


class NoTimeToTrainCLI(LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001
        parser.add_argument(
            "--out_path",
            type=str | None,
            default=None,
            help="Where fill_memory / postprocess_memory write the memory file.",
        )
        parser.add_argument(
            "--export_result",
            type=str | None,
            default=None,
            help="Write the COCO-format results json here after test.",
        )
        parser.add_argument("--seed", type=int | None, default=None, help="Only names the results json.")
        parser.add_argument("--n_shot", type=int | None, default=None, help="Only names the results json.")
        parser.add_argument("--coco_semantic_split", type=str | None, default=None,
                            help="Only names the results json.")  # fmt: skip

    # ------------------------------------------------------------------ hooks
    def _args(self) -> Any:
        return self.config[self.subcommand]

    def before_test(self) -> None:
        args = self._args()
        mode = self.model.test_mode
        if mode in MEMORY_MODES and not args.out_path:
            raise UserInputError(f"--model.test_mode {mode} writes a memory file: pass --out_path PATH.")
        ckpt = args.get("ckpt_path")
        if ckpt and not os.path.isfile(ckpt):
            raise UserInputError(
                f"--ckpt_path {ckpt}: file not found. It is the memory file written by the previous step's "
                "--out_path (fill_memory, then postprocess_memory)."
            )
        if ckpt and args.out_path and os.path.abspath(ckpt) == os.path.abspath(args.out_path):
            raise UserInputError(
                f"--out_path must differ from --ckpt_path ({ckpt}); inputs are never overwritten."
            )
        self.model._ckpt_path_hint = ckpt

    def after_test(self) -> None:
        args = self._args()
        mode = self.model.test_mode
        trainer = self.trainer
        if mode in MEMORY_MODES:
            save_memory(trainer, args.out_path)
            if trainer.is_global_zero:
                print(f"Memory bank ({mode}) saved to {args.out_path}")
            return
        if mode != "test" or not trainer.is_global_zero:
            return
        results = self.model.results or []
        if args.export_result:
            atomic_save_json(results, args.export_result)
            print(f"Results ({len(results)} detections) written to {args.export_result}")
        name = results_name(args.coco_semantic_split, args.n_shot, args.seed)
        if name:
            path = os.path.join("inst_to_segm", f"coco_inst_{name}_results.json")
            atomic_save_json(results, path)
            print(f"Results written to {path}")
        self.model.evaluate(results)
        if self.model.last_evals:
            from .reports import save_per_class_report

            # Next to the logs; without a logger, next to the pictures of this dataset.
            name = self.model.model_cfg.dataset_name
            out = trainer.log_dir if trainer.loggers else os.path.join("results_analysis", name, "evaluation")
            save_per_class_report(self.model.last_evals, self.model.dataset, out)


def results_name(semantic_split: str | None, n_shot: int | None, seed: int | None) -> str:
    name = f"semantic_split_{semantic_split}_" if semantic_split else ""
    if n_shot is not None and seed is not None:
        name += f"{n_shot}shot_{seed}seed"
    return name


def save_memory(trainer, path: str) -> None:  # noqa: ANN001
    """``trainer.save_checkpoint`` to a temporary name, then rename (rank 0): an interrupted run
    leaves any previous file intact."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.partial")
    if trainer.is_global_zero:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    trainer.save_checkpoint(tmp, weights_only=True)
    if trainer.is_global_zero:
        os.replace(tmp, path)
    trainer.strategy.barrier("save_memory")


def main(argv: list[str] | None = None) -> NoTimeToTrainCLI | None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return NoTimeToTrainCLI(args=argv)
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
