"""``run_lightening.py``: LightningCLI in subclass mode with the reference's extra arguments.

Before the run, every up-front check of the chosen mode (``cli.modes``) runs here, before any
network is built; the run's output paths go to the module, whose mode's sinks write them
(``output.sinks``), and the data to a ``cli.datamodule.ReferenceDataModule``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from typing import Any, Literal

from jsonargparse import ActionYesNo
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from no_time_to_train import signals
from no_time_to_train.cli.datamodule import SUPPORT_HINT, ReferenceDataModule
from no_time_to_train.cli.lightning_module import Sam2MatcherLightningModel
from no_time_to_train.cli.parse_errors import condense
from no_time_to_train.compat import CheckpointWithoutHyperparameters
from no_time_to_train.data.folders import list_images
from no_time_to_train.errors import UserInputError
from no_time_to_train.io_utils import check_output_path
from no_time_to_train.output.coco_dataset import ExportSettings
from no_time_to_train.output.sinks import RunOutputs
from no_time_to_train.pipeline import memory_io

TEST_DESCRIPTION = """\
Runs one step of the method, chosen by --model.test_mode: fill_memory (encode the reference set
into a memory file, --out_path), postprocess_memory (class statistics, --ckpt_path IN --out_path
OUT), vis_memory (pictures of the bank) or test (segment the test images and report COCO AP; with
dataset_cfgs.test.json_file null, label every image under dataset_cfgs.test.root into
--export_dataset OUT.json).
The model keys (--model.KEY or --model.init_args.KEY; usually set in --config) are listed first,
then Lightning's trainer options."""


def _read_attribute_docstrings() -> None:
    """Show each config key's docstring in ``--help`` (jsonargparse reads them only when asked)."""
    import jsonargparse

    if hasattr(jsonargparse, "set_parsing_settings"):
        jsonargparse.set_parsing_settings(docstring_parse_attribute_docstrings=True)
    else:  # jsonargparse < 4.32
        jsonargparse.set_docstring_parse_options(attribute_docstrings=True)


def model_help() -> str:
    """The option list of the model's keys (what ``--model.help Sam2MatcherLightningModel``
    prints), without its usage block."""
    parser = LightningArgumentParser(prog="run_lightening.py test", description="", exit_on_error=False)
    parser.add_class_arguments(Sam2MatcherLightningModel, "model", fail_untyped=False)
    text = parser.format_help()
    start = text.find("\n\n", text.find("usage:"))
    body = text[start:].strip("\n")
    # The parser's own -h/--help/--config lines belong to that side parser, not to `test`.
    groups = [g for g in body.split("\n\n") if not g.lstrip().startswith("options:")]
    return "\n\n".join(groups)


class ShortErrorParser(LightningArgumentParser):
    """Configuration errors in one short paragraph (``parse_errors.condense``), not a usage dump.
    Flags are matched exactly: argparse would otherwise take a prefix (``...points_per_sid 8``)
    for the one flag it begins."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):  # noqa: ANN201
        if not self.exit_on_error:
            return super().error(message, ex)
        print(f"error: {condense(message)}", file=sys.stderr)
        raise SystemExit(2)

    def format_help(self) -> str:
        """The ``test`` subcommand's help lists the model keys before the trainer's options: in
        subclass mode jsonargparse shows them only under ``--model.help CLASS``."""
        text = super().format_help()
        if "--model" not in self._option_string_actions or "--model.help" not in self._option_string_actions:
            return text
        marker = "\noptions:"
        at = text.find(marker)
        if at < 0:
            return text + "\n" + model_help() + "\n"
        header = "\nModel keys (--model.help Sam2MatcherLightningModel prints only these):\n\n"
        return text[:at] + header + model_help() + "\n" + text[at:]


class NoTimeToTrainCLI(CheckpointWithoutHyperparameters, LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", ShortErrorParser)
        # The method trains nothing: no optimizer or scheduler options, only the `test` subcommand.
        kwargs.setdefault("auto_configure_optimizers", False)
        # Sam2MatcherLightningModel as the base class: `--model Sam2MatcherLightningModel` and
        # `--model.help Sam2MatcherLightningModel` resolve the short name; configs naming the full
        # class path (as the reference's do) parse as before.
        if not args:
            kwargs.setdefault("model_class", Sam2MatcherLightningModel)
            kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("parser_kwargs", {"test": {"description": TEST_DESCRIPTION}})
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"test": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser) -> None:  # noqa: ANN001
        parser.add_argument(
            "--out_path",
            type=str | None,
            default=None,
            help="Where fill_memory / postprocess_memory write the memory file.",
        )
        parser.add_argument(
            "--out_support_res",
            type=str | None,
            default=None,
            help="test_support: write the support set's raw results (COCO json) here.",
        )
        parser.add_argument(
            "--out_neg_pkl",
            type=str | None,
            default=None,
            help="test_support writes the negative reference set here; fill_memory_neg reads it.",
        )
        parser.add_argument(
            "--out_neg_json",
            type=str | None,
            default=None,
            help="test_support writes the negatives' COCO json (masks) here; fill_memory_neg reads it.",
        )
        parser.add_argument(
            "--export_result",
            type=str | None,
            default=None,
            help="Write the COCO-format results json here after test.",
        )
        parser.add_argument(
            "--export_dataset", type=str | None, default=None,
            help="test: write the labelled images as a COCO instances dataset json here (written per image "
                 "to OUT.parts/ and assembled at the end; a stopped run resumes with the same command).",
        )  # fmt: skip
        parser.add_argument("--export_score_thr", type=float, default=0.0,
                            help="--export_dataset keeps detections scoring at least this.")  # fmt: skip
        parser.add_argument("--export_max_dets", type=int | None, default=None,
                            help="--export_dataset keeps at most this many detections per image (best first).")  # fmt: skip
        parser.add_argument("--export_segmentation", type=Literal["rle", "polygon"], default="rle",
                            help="--export_dataset mask format: rle (exact) or polygon (outer contours).")  # fmt: skip
        parser.add_argument("--overwrite", action=ActionYesNo, default=False,
                            help="--export_dataset: start a stopped run with other settings over (deletes its parts).")  # fmt: skip
        parser.add_argument("--seed", type=int | None, default=None, help="Only names the results json.")
        parser.add_argument("--n_shot", type=int | None, default=None, help="Only names the results json.")
        parser.add_argument("--coco_semantic_split", type=str | None, default=None,
                            help="Only names the results json.")  # fmt: skip

    def check_ckpt_path(self, ckpt: str | None) -> None:
        """Before instantiation, where LightningCLI would read ``--ckpt_path``'s hyper-parameters
        (memory files hold none; the configuration comes from --config and the flags): check only
        that the file is readable, so a truncated or foreign file stops with a clear message
        instead of a traceback (its contents are validated against the config in ``before_test``)."""
        self._ckpt_contents = memory_io.read(ckpt, mmap=True) if ckpt and os.path.isfile(ckpt) else None

    # ------------------------------------------------------------------ hooks
    def _args(self) -> Any:
        return self.config[self.subcommand]

    def before_test(self) -> None:
        """Every up-front check of the mode's entry (``cli.modes``) before any network is built,
        then the data module and the output paths."""
        args, module = self._args(), self.model
        mode = module.mode
        if mode is None:
            return  # the module's setup says how to choose one
        flag = f"--model.test_mode {mode.name}"
        if mode.needs_support_cfg and module.dataset_cfgs.support is None:
            raise UserInputError(f"{flag} segments or reads the support set: {SUPPORT_HINT}")
        if mode.writes_memory and not args.out_path:
            raise UserInputError(f"{flag} writes a memory file: pass --out_path PATH.")
        ckpt = args.get("ckpt_path")
        if ckpt and not os.path.isfile(ckpt):
            raise UserInputError(
                f"--ckpt_path {ckpt}: file not found. It is the memory file written by the previous step's "
                "--out_path (fill_memory, then postprocess_memory)."
            )
        self._refuse_overwriting_inputs(args)
        self._check_outputs_writable(args)
        if mode.data == "targets" and module.dataset_cfgs.test.json_file is None:
            self._check_folder_run(args)
        if mode.needs_ckpt and not ckpt:
            raise UserInputError(f"{flag} starts from the postprocessed positive memory: pass --ckpt_path "
                                 "memory_postprocessed.ckpt.")  # fmt: skip
        for name in mode.input_flags:
            path = args.get(name)
            if not path or not os.path.isfile(path):
                raise UserInputError(
                    f"{mode.name} reads the negatives test_support wrote: --{name} {path or '(not given)'} "
                    "is not a file. Run --model.test_mode test_support with --out_neg_pkl and --out_neg_json first."
                )
        if "out_neg_pkl" in mode.output_flags and bool(args.out_neg_pkl) != bool(args.out_neg_json):
            raise UserInputError(
                "Negative sampling writes two files: pass both --out_neg_pkl and --out_neg_json."
            )
        if ckpt:
            # Check the file against the config before the networks are built (minutes for SAM2-L +
            # DINOv2-g) and before Lightning restores it (a foreign file would fail with a KeyError).
            contents = getattr(self, "_ckpt_contents", None) or memory_io.read(ckpt, mmap=True)
            self._ckpt_contents = None
            memory_io.check_meta(contents, module.memory_meta(), ckpt)
        module.memory_path = ckpt
        settings = ExportSettings(args.export_score_thr, args.export_max_dets, args.export_segmentation)
        module.outputs = RunOutputs(
            export_dataset=args.export_dataset if "export_dataset" in mode.output_flags else None,
            export_settings=settings, overwrite=bool(args.overwrite),
            out_path=args.out_path if mode.writes_memory else None,
            export_result=args.export_result if "export_result" in mode.output_flags else None,
            results_name=results_name(args.coco_semantic_split, args.n_shot, args.seed) or None
            if "export_result" in mode.output_flags else None,
            out_support_res=args.out_support_res, out_neg_pkl=args.out_neg_pkl, out_neg_json=args.out_neg_json,
        )  # fmt: skip
        self.datamodule = ReferenceDataModule(module)
        self.datamodule.negative_paths = (args.out_neg_pkl, args.out_neg_json)

    def after_test(self) -> None:
        self.model.finish_without_items()

    def _check_folder_run(self, args: Any) -> None:
        """A folder without ground truth: it holds images, and the run writes a dataset that does
        not overwrite one of them (checked at once, before any network is built)."""
        test = self.model.dataset_cfgs.test
        files = list_images(test.root, test.images)
        if not args.export_dataset:
            raise UserInputError(
                f"dataset_cfgs.test.json_file is null, so the {len(files)} image(s) under {test.root} have no ground "
                "truth to evaluate against: pass --export_dataset OUT.json to write them as a labelled COCO dataset."
            )
        for flag in ("export_dataset", "export_result"):
            out = args.get(flag)
            if out and any(_same_file(out, os.path.join(test.root, f)) for f in files):
                raise UserInputError(
                    f"--{flag} {out} is one of the target images; outputs never overwrite inputs."
                )

    def _check_outputs_writable(self, args: Any) -> None:
        """Every output of this run must be writable before the networks are built: a path that
        cannot be written would otherwise fail only after all the work."""
        mode, opts = self.model.mode, self.model.model_cfg.test
        if mode.writes_memory and args.out_path:
            check_output_path(args.out_path, "--out_path")
        for name in mode.output_flags:
            if args.get(name):
                check_output_path(args[name], f"--{name}")
        if "export_result" in mode.output_flags and opts.export_dir:
            check_output_path(opts.export_dir, "--model.init_args.model_cfg.test.export_dir", is_dir=True)
        if mode.pictures(self.model.model_cfg):
            check_output_path("results_analysis", "the picture folder (results_analysis/)", is_dir=True)

    def _refuse_overwriting_inputs(self, args: Any) -> None:
        """Outputs never overwrite inputs: ``--out_path`` / ``--export_result`` must name a file that
        is not read by this run (memory file, annotations, reference pickle, checkpoints, configs)."""
        mode = self.model.mode
        outputs = {"--out_path": args.out_path if mode.writes_memory else None}
        outputs |= {f"--{name}": args.get(name) for name in mode.output_flags}
        cfg, data = self.model.model_cfg, self.model.dataset_cfgs
        inputs = {
            "--ckpt_path": args.get("ckpt_path"),
            "dataset_cfgs.fill_memory.json_file": data.fill_memory.json_file,
            "dataset_cfgs.fill_memory.memory_pkl": data.fill_memory.memory_pkl,
            "dataset_cfgs.test.json_file": data.test.json_file,
            "model_cfg.sam2_ckpt_path": cfg.sam2_ckpt_path,
            "model_cfg.encoder_ckpt_path": cfg.encoder_ckpt_path,
        }
        if data.support is not None:
            inputs["dataset_cfgs.support.json_file"] = data.support.json_file
        inputs |= {f"--{name}": args.get(name) for name in mode.input_flags}
        for path in args.get("config") or []:
            inputs[f"--config {os.fspath(path)}"] = os.fspath(path)
        for out_flag, out in outputs.items():
            for in_flag, src in inputs.items():
                if out and src and _same_file(out, src):
                    raise UserInputError(
                        f"{out_flag} {out} is the file this run reads as {in_flag}; outputs never overwrite "
                        f"inputs. Pass another path to {out_flag}."
                    )


def results_name(semantic_split: str | None, n_shot: int | None, seed: int | None) -> str:
    name = f"semantic_split_{semantic_split}_" if semantic_split else ""
    if n_shot is not None and seed is not None:
        name += f"{n_shot}shot_{seed}seed"
    return name


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _user_error_classes(cls: type = UserInputError) -> set[str]:
    names = {f"{cls.__module__}.{cls.__qualname__}"}
    for sub in cls.__subclasses__():
        names |= _user_error_classes(sub)
    return names


def user_error_message(exc: BaseException) -> str | None:
    """The one-paragraph message of a user error, or None for anything else.

    The error may come wrapped: jsonargparse re-raises errors of the model's ``__init__`` as the
    cause of a ValueError, and torch re-raises an error of a DataLoader worker (or of another
    process) with the original traceback as its message, whose last line(s) are then
    ``no_time_to_train.errors.DatasetError: <message>``.
    """
    names = "|".join(re.escape(n) for n in sorted(_user_error_classes()))
    while exc is not None:
        text = str(exc)
        if "Traceback (most recent call last)" in text:
            found = list(re.finditer(rf"^(?:{names}): ", text, flags=re.MULTILINE))
            if found:
                return " ".join(text[found[-1].end() :].split())
        elif isinstance(exc, UserInputError):
            return " ".join(text.split())
        exc = exc.__cause__
    return None


class _DropAdvertisements(logging.Filter):
    """Lightning prints tips about cloud products at every start, and says it loads "model
    weights" from the memory file, which holds none (the module says what it restores)."""

    NOISE = ("💡 Tip", "Loaded model weights from the checkpoint", "Restoring states from the checkpoint")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.NOISE)


def _quiet_lightning() -> None:
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropAdvertisements())
    # Lightning's own use of torch's pytree API is deprecated in recent torch releases.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def main(argv: list[str] | None = None) -> NoTimeToTrainCLI | None:
    _quiet_lightning()
    _read_attribute_docstrings()
    previous = signals.install()
    try:
        return NoTimeToTrainCLI(args=argv)
    except (KeyboardInterrupt, SystemExit) as e:
        status = signals.exit_status()
        if status is None and isinstance(e, KeyboardInterrupt):
            status = 130
        if status is None:
            raise
        rank = os.environ.get("LOCAL_RANK", "0")
        name = signals.Interrupted(status - 128).args[0]
        print(f"\n{name}{f' (process {rank})' if rank != '0' else ''}: stopped; files written by earlier "
              "runs are unchanged and nothing was half-written.", file=sys.stderr)  # fmt: skip
        raise SystemExit(status) from None
    except Exception as e:
        status = signals.exit_status() or signals.status_of_lost_worker(e)
        if status is not None:  # e.g. a DataLoader worker killed by the same signal
            print(f"\nstopped by a signal (status {status}); files written by earlier runs are unchanged.",
                  file=sys.stderr)  # fmt: skip
            raise SystemExit(status) from None
        rank = os.environ.get("LOCAL_RANK", "0")
        where = f" (process {rank})" if rank != "0" else ""  # DDP children print their own errors
        message = user_error_message(e)
        if message is not None:
            print(f"error{where}: {message}", file=sys.stderr)
            raise SystemExit(2) from None
        if _peer_process_lost(e):
            print(f"error{where}: another process of this multi-device run stopped (its error is printed above); "
                  "this one cannot go on without it.", file=sys.stderr)  # fmt: skip
            raise SystemExit(1) from None
        raise
    finally:
        signals.restore(previous)


def _peer_process_lost(exc: BaseException) -> bool:
    """A collective failed because another rank exited (gloo reports it as "closed by peer")."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and "gloo" in text and "closed by peer" in text
