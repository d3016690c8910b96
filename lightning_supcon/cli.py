"""The ``lightning-supcon`` command: LightningCLI with fit / validate / test / predict and YAML configs.

Models and DataModules are chosen by class path (``model.class_path``, ``data.class_path``); the DataModule's
``num_classes`` and ``in_channels`` are linked into the model, so they are written once. User errors (bad paths,
bad values, a wrong checkpoint) end with one ``error:`` line; set ``LIGHTNING_SUPCON_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING

import pytorch_lightning as pl
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_supcon.callbacks.save_config import SaveConfigToLoggers

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

USER_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError, FloatingPointError)
# A run stopped by SIGTERM (or SIGUSR1 outside SLURM) exits like a process killed by SIGTERM, after its checkpoint.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


def user_message(err: BaseException) -> str:
    """The message a user needs: the innermost of our own errors when jsonargparse wrapped it (an error raised in a
    model's or DataModule's constructor arrives as a multi-line "Does not validate against any of the Union
    subtypes" report)."""
    chain, seen = [], set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    for inner in reversed(chain):
        if isinstance(inner, USER_ERRORS) and "Does not validate" not in str(inner):
            return str(inner)
    lines = [line.strip()[2:] for line in str(err).splitlines() if line.strip().startswith("- ")]
    reasons = [line for line in lines if not line.startswith("Expected a <class 'NoneType'>")]
    return reasons[0] if reasons else str(err)


class SupConArgumentParser(LightningArgumentParser):
    """Prints a one-line usage before an error (the full list of options stays in ``--help``)."""

    def print_usage(self, file: SupportsWrite[str] | None = None) -> None:  # type: ignore[override]
        prog = self.prog.replace(" [options]", "")
        print(f"usage: {prog} [-h] [-c CONFIG] [--print_config] [options]", file=file or sys.stderr)


class SupConCLI(LightningCLI):
    """LightningCLI with the DataModule's ``num_classes`` and ``in_channels`` linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.init_args.in_channels", apply_on="instantiate")


def cli(args: ArgsType = None, run: bool = True) -> SupConCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` when given."""
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
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Console entry point; exits with status 2 and one line on user errors, 143 after a preemption."""
    try:
        cli(args)
    except SIGTERMException:
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    except USER_ERRORS as err:
        if os.environ.get("LIGHTNING_SUPCON_DEBUG"):
            raise
        print(f"lightning-supcon: error: {user_message(err)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
