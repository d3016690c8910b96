"""The ``lightning-supcon`` command, fenced: the CLI, its console messages, run folders, run loggers and the run
callbacks. The library (``losses``, ``nets``, ``models``, ``data``, ...) never imports this package.

- :mod:`~lightning_supcon.cli.command`: :class:`SupConCLI` (LightningCLI), :func:`main`.
- :mod:`~lightning_supcon.cli.console`: one-line ``error:`` messages from jsonargparse's and Lightning's reports.
- :mod:`~lightning_supcon.cli.runs`, :mod:`~lightning_supcon.cli.run_loggers`, :mod:`~lightning_supcon.cli.loggers`:
  a folder per run, ``--ckpt_path last``, the CSV and W&B loggers of a run.
- :mod:`~lightning_supcon.cli.run_checkpoint`, :mod:`~lightning_supcon.cli.preemption`,
  :mod:`~lightning_supcon.cli.last_validation`, :mod:`~lightning_supcon.cli.summary`,
  :mod:`~lightning_supcon.cli.save_config`: the callbacks every run of the command gets.

Private parts of Lightning and jsonargparse the command relies on (a new release of either may change them; the
tests in ``tests/cli/`` run the real parser and Trainer, so CI sees a change, and ``setup.cfg`` bounds both above):

1. ``LightningCLI._parse_ckpt_path`` (``command.py``): overridden to resolve ``--ckpt_path last`` first.
2. ``ArgumentParser._actions`` (argparse, through jsonargparse; ``command.py``): the option names for a message.
3. ``DefaultHelpFormatter._get_help_string`` (``command.py``): the ``--help`` text.
4. ``ModelCheckpoint._save_checkpoint`` (``run_checkpoint.py``): the run folder's ``last.ckpt`` link after a save.
5. ``Trainer._accelerator_connector.cluster_environment`` (``preemption.py``): SLURM or not.
6. ``Trainer._signal_connector.received_sigterm`` (``preemption.py``): a SIGUSR1 handled as Lightning's SIGTERM.
7. ``WandbLogger._experiment`` / ``_wandb_init`` (``loggers.py``): offline fallback and the run's announcement.
8. ``CSVLogger._fs``, ``_experiment``, ``_check_log_dir_exists`` (``loggers.py``): appending to a resumed run's
   ``metrics.csv``.
9. jsonargparse's message texts (``console.py``: ``Parser key "..."``, ``class_path '...': Option '...' is not
   accepted``, ``unrecognized arguments``), parsed by regular expressions; an unknown text is printed whole on one line.
"""

from lightning_supcon.cli.command import SupConCLI, cli, main

__all__ = ["SupConCLI", "cli", "main"]
