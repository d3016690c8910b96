"""The ``lightning-supcon`` command: LightningCLI with fit / validate / test / predict and YAML configs.

Models and DataModules are chosen by class path (``model.class_path``, ``data.class_path``); the DataModule's
``num_classes`` and ``in_channels`` are linked into the model, so they are written once. The standard callbacks are
the command's own (``checkpoint:``, ``preemption:``, ``summary:`` sections, not copies in every config), and every
run gets its own folder ``<default_root_dir>/version_N`` with ``<default_root_dir>/last.ckpt`` pointing at the
newest state (:mod:`lightning_supcon.cli.runs`); ``--ckpt_path last`` resumes from the newest readable checkpoint into
the same folder and log. User errors end with one ``error:`` line (:mod:`lightning_supcon.cli.console`); set
``LIGHTNING_SUPCON_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytorch_lightning as pl
from jsonargparse import DefaultHelpFormatter
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_supcon.cli import console, preemption, run_loggers, runs
from lightning_supcon.cli.last_validation import ValidateLastEpoch
from lightning_supcon.cli.preemption import PreemptionCheckpoint
from lightning_supcon.cli.run_checkpoint import RunCheckpoint
from lightning_supcon.cli.save_config import SaveConfigToLoggers
from lightning_supcon.cli.summary import MetricsSummary

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

USER_ERRORS = console.USER_ERRORS
# A run stopped by SIGTERM (or SIGUSR1 outside SLURM) exits like a process killed by SIGTERM, after its checkpoint;
# one stopped by Ctrl-C like a process killed by SIGINT (130).
PREEMPTED_EXIT_CODE = preemption.PREEMPTED_EXIT_CODE
DESCRIPTION = (
    "Supervised Contrastive Learning (Khosla et al., NeurIPS 2020) with PyTorch Lightning: train a SupCon encoder, "
    "a linear probe on it, or the cross-entropy baseline from a YAML config, e.g. "
    "`lightning-supcon fit --config configs/digits.yaml`."
)
OPTIONS_HINT = (
    "Model and data options: `lightning-supcon {cmd} --model.help lightning_supcon.SupConModule` (or "
    "CrossEntropyModule, LinearProbeModule) and `--data.help lightning_supcon.DigitsDataModule` (or "
    "CIFAR10DataModule, CIFAR100DataModule, ImageFolderDataModule, CsvDataModule, HFDataModule); a config's values: "
    "`--config X --print_config`."
)
_SHOWN_SUBCLASSES = "lightning_supcon."


def user_message(err: BaseException) -> str:
    """The one line a user error ends with (see :func:`lightning_supcon.cli.console.user_message`)."""
    return console.user_message(err)


class SupConHelpFormatter(DefaultHelpFormatter):
    """Lists the project's classes among an argument's known subclasses, and counts the rest (torch.nn's ~1,000)."""

    def _get_help_string(self, action: Any) -> str:
        text = super()._get_help_string(action)
        head, sep, tail = text.partition(", known subclasses: ")
        if not sep:
            return text
        names, close, rest = tail.rpartition(")")
        paths = [name.strip() for name in names.split(",")]
        ours = [path for path in paths if path.startswith(_SHOWN_SUBCLASSES)]
        others = f"{len(paths) - len(ours)} more from other packages" if len(paths) > len(ours) else ""
        listed = ", ".join([*ours, others] if others else ours)
        return f"{head}, known subclasses: {listed}{close}{rest}"


class SupConArgumentParser(LightningArgumentParser):
    """Prints every parse error as one ``lightning-supcon: error:`` line (the options stay in ``--help``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", SupConHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # argparse would take `--trainer.max_epoch` for `max_epochs`
        super().__init__(*args, **kwargs)

    def print_usage(self, file: SupportsWrite[str] | None = None) -> None:  # type: ignore[override]
        prog = self.prog.replace(" [options]", "")
        print(f"usage: {prog} [-h] [-c CONFIG] [--print_config] [options]", file=file or sys.stderr)

    def format_help(self, formatter: Any = None) -> str:
        """The help with a one-line usage (the options follow; argparse's usage lists all of them again)."""
        text = super().format_help(formatter) if formatter is not None else super().format_help()
        if not text.startswith("usage:"):
            return text
        usage, _, rest = text.partition("\n\n")
        if usage.count("\n") < 3:
            return text
        prog = self.prog.replace(" [options]", "")
        return f"usage: {prog} [-h] [-c CONFIG] [--print_config] [options]\n\n{rest}"

    def parse_args(self, args: Any = None, *more: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Parse, keeping the command line for :meth:`error` (an option given before the class that accepts it)."""
        self._argv = (
            [str(arg) for arg in (sys.argv[1:] if args is None else args)] if not isinstance(args, dict) else []
        )
        return super().parse_args(args, *more, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("LIGHTNING_SUPCON_DEBUG"):
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        options = [flag for action in parser._actions for flag in action.option_strings]
        line = console.parse_error_line(message, options, getattr(self, "_argv", sys.argv[1:]))
        print(f"{console.PREFIX} {line}", file=sys.stderr)
        self.exit(2)


class SupConCLI(LightningCLI):
    """LightningCLI with linked data -> model sizes, the standard callbacks built in, and a folder per run."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.multilabel", compute_fn=is_multilabel, apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(PreemptionCheckpoint, "preemption")
        parser.add_lightning_class_args(MetricsSummary, "summary")
        parser.add_lightning_class_args(ValidateLastEpoch, "last_validation")

    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last`` and check that a named file can be read, before Lightning reads it."""
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            root = Path(config.trainer.default_root_dir or os.getcwd())
            checkpoint = resolve_ckpt_path(config.get("ckpt_path"), root, fresh_start=subcommand == "fit")
            config.ckpt_path = None if checkpoint is None else str(checkpoint)
            if isinstance(checkpoint, Path):  # before Lightning swaps in the checkpoint's own model class
                class_path = getattr(config.get("model"), "class_path", None)
                runs.check_model_kind(checkpoint, class_path, model_kind(class_path))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(config.trainer.default_root_dir or os.getcwd())
        checkpoint = config.get("ckpt_path")
        resumed = resumed_folder(checkpoint, root) if self.subcommand == "fit" else None
        version = None
        if resumed is not None and resumed.parent.resolve() == root.resolve():
            version = runs.run_version(resumed)
        config.trainer.logger = run_loggers.compose_loggers(config.trainer.logger, str(root), version)
        first_is_run_logger = run_loggers.first_is_run_logger(config.trainer.logger)
        if resumed is not None and config.checkpoint.dirpath is None and not first_is_run_logger:
            config.checkpoint.dirpath = str(resumed / "checkpoints")  # the resumed run continues its own folder
        if self.subcommand == "fit":  # a resumed fit continues its W&B run
            run_id = run_loggers.stored_wandb_run(resumed_checkpoint(checkpoint, root))
            run_loggers.continue_wandb_run(config.trainer.logger, run_id)

    def before_fit(self) -> None:
        explain_frozen_modules(self.model)


def model_kind(class_path: str | None) -> str | None:
    """The ``checkpoint_kind`` of the model class ``class_path`` (``None`` for a class without one)."""
    if not class_path:
        return None
    module, _, name = class_path.rpartition(".")
    try:
        kind = getattr(getattr(importlib.import_module(module), name), "checkpoint_kind", None)
    except (ImportError, AttributeError, ValueError):
        return None
    return kind if isinstance(kind, str) else None


def is_multilabel(data: pl.LightningDataModule) -> bool:
    """A DataModule's ``multilabel`` attribute (``False`` when it has none), linked like ``num_classes``. A model
    without a ``multilabel`` argument does not receive it (jsonargparse skips a link to a missing argument)."""
    return bool(getattr(data, "multilabel", False))


def resumed_folder(checkpoint: str | None, root: Path) -> Path | None:
    """The run folder a ``fit`` continues: that of its checkpoint, or on SLURM without one, that of the
    ``hpc_ckpt_N.ckpt`` Lightning will resume from by itself (a requeued job)."""
    if checkpoint == "hpc" or (checkpoint is None and SLURMEnvironment.detect()):
        return runs.hpc_run_folder(root)
    return runs.run_folder(checkpoint) if checkpoint is not None else None


def resumed_checkpoint(checkpoint: str | None, root: Path) -> Path | None:
    """The file a ``fit`` resumes from: ``--ckpt_path``'s, or SLURM's newest ``hpc_ckpt_N.ckpt`` (``"hpc"``, or none
    given on SLURM); ``None`` for a fresh start or ``"best"``."""
    if checkpoint == "hpc" or (checkpoint is None and SLURMEnvironment.detect()):
        return runs.hpc_checkpoint(root)
    return Path(checkpoint) if checkpoint not in (None, "best") else None


def resolve_ckpt_path(value: str | None, root: Path, fresh_start: bool = True) -> Path | str | None:
    """``--ckpt_path``: ``"last"`` -> the newest readable checkpoint under ``root`` (one line per newer file skipped;
    when there is none, ``None`` with a note if ``fresh_start`` (``fit``), else an error); a file -> itself if
    readable; ``"best"``, ``"hpc"``, ``None`` as given (Lightning resolves them).

    Raises:
        CheckpointError: If a named file cannot be read, or ``"last"`` finds none and ``fresh_start`` is false
            (``validate``, ``test`` and ``predict`` would otherwise score an untrained model).
    """
    if value is None or value in ("best", "hpc"):
        return value
    if value != "last":
        return runs.check_readable(value)
    found, skipped = runs.newest_readable(root)
    for err in skipped:
        print(f"lightning-supcon: warning: skipped a checkpoint: {err}", file=sys.stderr, flush=True)
    if found is None and not fresh_start:
        raise runs.CheckpointError(
            f"--ckpt_path last: no readable checkpoint under {root}; train first or give --trainer.default_root_dir "
            "of the run to evaluate"
        )
    if found is None:
        print(f"lightning-supcon: no checkpoint under {root} yet: `--ckpt_path last` starts afresh.", flush=True)
    return found


def explain_frozen_modules(model: pl.LightningModule) -> None:
    """Say in one line why a model with a frozen encoder starts training with modules in eval mode (Lightning warns
    "Found N module(s) in eval mode" without a reason)."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or any(p.requires_grad for p in encoder.parameters()):
        return
    frozen = sum(1 for module in encoder.modules() if not module.training)
    if frozen:
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        print(f"The frozen encoder's {frozen} modules stay in eval mode while the classifier trains (intended).")


def cli(args: ArgsType = None, run: bool = True) -> SupConCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` when given."""
    console.quiet_lightning()
    subcommands = ("fit", "validate", "test", "predict")
    return SupConCLI(
        model_class=pl.LightningModule,
        parser_class=SupConArgumentParser,
        datamodule_class=pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        parser_kwargs={"description": DESCRIPTION, "prog": "lightning-supcon"}
        | {cmd: {"description": OPTIONS_HINT.format(cmd=cmd)} for cmd in subcommands},
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Console entry point; exits with status 2 and one line on user errors, 143 after a preemption, 130 after a
    Ctrl-C that saved ``last.ckpt``."""
    try:
        cli(args)
    except SIGTERMException:
        raise SystemExit(preemption.stop_exit_code()) from None
    except USER_ERRORS as err:
        if os.environ.get("LIGHTNING_SUPCON_DEBUG"):
            raise
        print(f"{console.PREFIX} {user_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
