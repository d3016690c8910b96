"""``SupConWandbLogger``: a Weights & Biases logger that never prompts, never hangs without an account.

Lightning's ``WandbLogger`` calls ``wandb.init``, which asks for an API key on a terminal when none is set up. This
logger looks for credentials first, the way ``wandb`` does (the ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE``
environment variables, or an API key for the W&B host in ``$NETRC`` / ``~/.netrc``): with them it logs online;
without them it logs offline to ``<save_dir>/wandb/offline-run-*`` and prints one line saying how to upload the run
later with ``wandb sync``. ``WANDB_MODE=offline`` / ``disabled`` are honoured. W&B's own console chatter is off.

Use it from the command line with ``--config configs/logger/wandb.yaml`` after the experiment's config, or with
``--trainer.logger lightning_supcon.cli.loggers.SupConWandbLogger`` (``--trainer.logger.init_args.project my_project``);
either way W&B is *added*: the run folder keeps its ``metrics.csv`` and ``config.yaml``, and a resumed run continues
the same W&B run (:mod:`lightning_supcon.cli.run_loggers`). The W&B run's config is the resolved CLI config, each
setting once (:class:`~lightning_supcon.cli.save_config.SaveConfigToLoggers`).

``RunLogger`` is the command's default logger: Lightning's ``CSVLogger`` writing ``<default_root_dir>/version_N/``
(the run folder of :mod:`lightning_supcon.cli.runs`) that appends to its ``metrics.csv`` when a resumed run continues
its version, where ``CSVLogger`` would delete the file.
"""

from __future__ import annotations

import configparser
import contextlib
import csv
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_info

from lightning_supcon.utils.files import first_line

Mode = Literal["auto", "online", "offline", "disabled"]
DEFAULT_SAVE_DIR = "outputs"
MODES: tuple[str, ...] = ("auto", "online", "offline", "disabled")
#: ``WANDB_MODE`` values and the mode each one means.
ENV_MODES: dict[str, str] = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}


def netrc_path(environ: Mapping[str, str]) -> Path:
    """The netrc file ``wandb`` reads: ``$NETRC``, else ``~/.netrc``, else ``~/_netrc`` (``HOME`` from ``environ``)."""
    if environ.get("NETRC"):
        return Path(environ["NETRC"]).expanduser()
    home = Path(environ.get("HOME") or Path.home())
    unix = home / ".netrc"
    return unix if unix.exists() or not (home / "_netrc").exists() else home / "_netrc"


def wandb_hosts(environ: Mapping[str, str]) -> set[str]:
    """The W&B server hosts whose netrc entry counts as credentials.

    ``WANDB_BASE_URL``'s host if set, else the ``base_url`` that ``wandb login --host`` stored in the global settings
    file (``$WANDB_CONFIG_DIR/settings`` or ``~/.config/wandb/settings``), else the cloud: ``api.wandb.ai`` and the
    installed ``wandb``'s default host.
    """
    url = environ.get("WANDB_BASE_URL")
    if not url:
        config_dir = environ.get("WANDB_CONFIG_DIR") or str(Path(environ.get("HOME") or Path.home()) / ".config/wandb")
        parser = configparser.ConfigParser()
        with contextlib.suppress(configparser.Error, OSError, UnicodeDecodeError):
            parser.read(Path(config_dir) / "settings")
        url = parser.get("default", "base_url", fallback="")
    if url:
        return {urlsplit(url).hostname or ""} - {""}
    import wandb

    return {"api.wandb.ai", urlsplit(wandb.Settings().base_url).hostname or "api.wandb.ai"}


def has_wandb_credentials(environ: Mapping[str, str] | None = None) -> bool:
    """Whether W&B credentials are set up, without contacting the server or prompting.

    Args:
        environ: The environment to look in; ``None`` uses ``os.environ``.

    Returns:
        True for ``WANDB_API_KEY`` or ``WANDB_IDENTITY_TOKEN_FILE`` set, or a netrc entry with a password for one of
        :func:`wandb_hosts` (what ``wandb login`` writes).

    Example:
        >>> has_wandb_credentials({"WANDB_API_KEY": "x" * 40})
        True
        >>> has_wandb_credentials({"HOME": "/nonexistent"})
        False
    """
    env = os.environ if environ is None else environ
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        netrc_file = netrc.netrc(netrc_path(env))
    except (OSError, netrc.NetrcParseError):
        return False
    for host in wandb_hosts(env):
        entry = netrc_file.authenticators(host)
        if entry and entry[2]:
            return True
    return False


def resolve_mode(mode: Mode, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The ``wandb.init`` mode to use, and why, for a requested ``mode`` and the environment.

    ``"auto"`` follows ``WANDB_MODE`` when it is set, else goes online. Online needs credentials: without them the
    run goes offline instead of prompting.

    Args:
        mode: ``"auto"``, ``"online"``, ``"offline"`` or ``"disabled"``.
        environ: The environment to look in; ``None`` uses ``os.environ``.

    Returns:
        ``("online" | "offline" | "disabled", reason)``.

    Raises:
        ValueError: For an unknown ``mode``.

    Example:
        >>> resolve_mode("auto", {"HOME": "/nonexistent"})
        ('offline', 'no W&B credentials found')
        >>> resolve_mode("auto", {"WANDB_MODE": "disabled"})
        ('disabled', 'WANDB_MODE=disabled')
        >>> resolve_mode("online", {"WANDB_API_KEY": "x" * 40})
        ('online', 'requested')
    """
    if mode not in MODES:
        raise ValueError(f"Expected argument `mode` to be one of {MODES}, but got {mode!r}.")
    env = os.environ if environ is None else environ
    reason = "requested"
    wanted: str = mode
    if mode == "auto":
        env_mode = env.get("WANDB_MODE", "").strip().lower()
        wanted = ENV_MODES.get(env_mode, "online")
        reason = f"WANDB_MODE={env_mode}" if env_mode in ENV_MODES else "credentials found"
    if wanted == "online" and not has_wandb_credentials(env):
        return "offline", "no W&B credentials found"
    return wanted, reason


class SupConWandbLogger(WandbLogger):
    """``WandbLogger`` that picks online or offline mode by itself and keeps W&B quiet.

    Every argument of :class:`~pytorch_lightning.loggers.WandbLogger` is accepted (``log_model`` logs checkpoints
    as artifacts; offline they are uploaded by ``wandb sync``). The run's files go to ``<save_dir>/wandb/``.

    Args:
        project: W&B project; ``None`` uses ``$WANDB_PROJECT``, else ``"lightning_supcon"``.
        save_dir: Parent of the ``wandb/`` folder (and, when it is the only logger outside the CLI, of
            ``<project>/<run id>/checkpoints``); ``None`` uses ``$WANDB_DIR``, else ``outputs`` (not the working
            directory: ``./lightning_supcon/<run id>`` would land inside the package's source folder).
        mode: ``"auto"`` (``$WANDB_MODE``, else online when credentials exist, else offline), ``"online"`` (falls
            back to offline without credentials, never prompts), ``"offline"`` or ``"disabled"``.
        quiet: Silence W&B's own console messages (banners, sync hints); this logger still prints its one line.
        log_model: ``False``, ``True`` (the checkpoints at the end of fit) or ``"all"`` (each one as it is saved).
        **kwargs: Passed to ``WandbLogger`` and ``wandb.init`` (``name``, ``tags``, ``group``, ``entity``, ...).

    Raises:
        ValueError: For an unknown ``mode``.
    """

    def __init__(
        self,
        project: str | None = None,
        save_dir: str | None = None,
        mode: Mode = "auto",
        quiet: bool = True,
        log_model: Literal["all"] | bool = False,
        **kwargs: Any,
    ) -> None:
        import wandb

        if "offline" in kwargs:  # WandbLogger's flag: the same as mode="offline"
            mode = "offline" if kwargs.pop("offline") else mode
        self.mode, self.mode_reason = resolve_mode(mode)
        save_dir = save_dir or os.environ.get("WANDB_DIR") or DEFAULT_SAVE_DIR
        settings = kwargs.pop("settings", None) or wandb.Settings()
        if isinstance(settings, Mapping):
            settings = wandb.Settings(**settings)
        if quiet:
            settings.silent = True
            settings.quiet = True
        super().__init__(
            project=project or os.environ.get("WANDB_PROJECT") or "lightning_supcon",
            save_dir=save_dir,
            log_model=log_model,
            mode=self.mode,
            settings=settings,
            **kwargs,
        )
        if self._wandb_init.get("anonymous") is None:  # wandb warns about the deprecated key even when unset
            self._wandb_init.pop("anonymous", None)
        self._announced = False
        self.config_logged = False

    def log_config(self, config: dict[str, Any]) -> None:
        """Log the resolved CLI config as the run's config; the module's own hyperparameters, which Lightning logs
        next, are then skipped: they are the config's ``model.init_args`` already (each setting once)."""
        self.log_hyperparams(config)
        self.config_logged = True

    def log_hyperparams(self, params: Any) -> None:
        """``WandbLogger.log_hyperparams``, unless :meth:`log_config` has logged the full config."""
        if not self.config_logged:
            super().log_hyperparams(params)

    @property
    def experiment(self) -> Any:
        """The ``wandb`` run, created on first use (rank zero), with one line about where it logs.

        An online run that cannot start (no network, a rejected key: ``wandb.init`` raises after its
        ``init_timeout``) starts offline instead.
        """
        import wandb

        created = self._experiment is None
        try:
            run = super().experiment
        except wandb.errors.Error as err:
            if not (created and self.mode == "online"):
                raise
            reason = first_line(err)
            self.mode, self.mode_reason = "offline", f"the online run failed to start: {reason}"
            self._wandb_init["mode"] = "offline"
            run = super().experiment
        if created and not self._announced and self._experiment is not None:
            self._announced = True
            self._announce()
        return run

    def _announce(self) -> None:
        if self.mode == "offline":
            run_dir = Path(getattr(self._experiment, "dir", "") or self.save_dir or ".").parent
            rank_zero_info(
                f"W&B: logging offline ({self.mode_reason}) to {run_dir}; upload it later with `wandb sync {run_dir}`"
            )
        elif self.mode == "online":
            rank_zero_info(f"W&B: logging online to {getattr(self._experiment, 'url', None) or self.name}")


class _AppendingWriter(ExperimentWriter):
    """``CSVLogger``'s writer that keeps an existing ``metrics.csv`` (and its columns) and appends to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(set(header))


class RunLogger(CSVLogger):
    """``CSVLogger`` into the run folders ``<save_dir>/version_N`` (``name=""``) that continues a given version.

    In a list of loggers (``configs/logger/wandb.yaml``) it is the one that keeps the run folder's ``metrics.csv``.

    With ``version`` naming an existing run folder (the CLI sets it when ``fit`` resumes from a checkpoint of that
    folder), the metrics of the resumed run are appended to the folder's ``metrics.csv``: one run, one log.

    Args:
        save_dir: The experiment folder; ``None``: ``trainer.default_root_dir`` under the CLI, else ``outputs``.
        name: Sub-folder between ``save_dir`` and the versions; ``""``: none.
        version: ``None``: the next free version; an int or a folder name: that one (continued if it exists).
        **kwargs: The other arguments of ``CSVLogger``.

    Example:
        >>> import tempfile
        >>> logger = RunLogger(tempfile.mkdtemp())
        >>> Path(logger.log_dir).name
        'version_0'
    """

    def __init__(
        self, save_dir: str | None = None, name: str = "", version: int | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(save_dir or DEFAULT_SAVE_DIR, name=name, version=version, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer, created on first use on rank zero (a dummy elsewhere)."""
        if not isinstance(self._experiment, ExperimentWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
