"""Hyperparameters as plain data: the injected parts (loss, optimiser, schedule) recorded in ``class_path`` form.

A LightningModule's hyperparameters go into every checkpoint and logger. Objects there would be pickled (and
refused by ``torch.load(weights_only=True)``), so the modules save their injected parts as the records below:
the same form LightningCLI writes in its configs, from which ``load_from_checkpoint`` under the CLI rebuilds them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from typing import Any, TypeVar

import pytorch_lightning as pl
from torch import nn


def record(part: Any) -> Any:
    """A plain-data record of an injected part.

    - a dataclass: its fields;
    - a ``functools.partial`` of a class (an ``OptimizerCallable`` from LightningCLI or :func:`sgd`):
      ``{"class_path", "init_args"}``;
    - an ``nn.Module`` with ``init_args()`` (e.g. :class:`~lightning_supcon.SupConLoss`): ``{"class_path",
      "init_args"}``;
    - ``None`` stays ``None``; anything else: its ``repr``.

    Example:
        >>> import torch
        >>> record(functools.partial(torch.optim.SGD, lr=0.1))
        {'class_path': 'torch.optim.sgd.SGD', 'init_args': {'lr': 0.1}}
    """
    if part is None:
        return None
    if dataclasses.is_dataclass(part) and not isinstance(part, type):
        return dataclasses.asdict(part)
    if isinstance(part, functools.partial):
        target = next((a for a in (part.func, *part.args) if isinstance(a, type)), part.func)
        return {"class_path": f"{target.__module__}.{target.__qualname__}", "init_args": dict(part.keywords)}
    init_args = getattr(part, "init_args", None)
    if isinstance(part, nn.Module) and callable(init_args):
        cls = type(part)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args()}
    return repr(part)


R = TypeVar("R")


def as_record(value: R | dict[str, Any] | None, cls: type[R]) -> R | None:
    """``value`` as the record class ``cls``: a record stays, the plain dict a checkpoint's hyperparameters hold for
    it (:func:`record`) is rebuilt, so ``load_from_checkpoint`` works outside the CLI too.

    Example:
        >>> from lightning_supcon.models.optimization import Schedule
        >>> as_record({"warmup_epochs": 2}, Schedule).warmup_epochs
        2
    """
    return cls(**value) if isinstance(value, dict) else value


def save_hparams(module: pl.LightningModule, encoder: nn.Module | str, **parts: Any) -> None:
    """``module.save_hyperparameters()`` of its ``__init__`` arguments as plain data.

    Under LightningCLI the hyperparameters are the parsed config (plain data already, the parts in the ``class_path``
    form the user wrote); otherwise the ``parts`` are replaced by their :func:`record`. An encoder module is left
    out (its weights are in the state dict).
    """
    ignore = [] if isinstance(encoder, str) else ["encoder"]
    with warnings.catch_warnings():  # an injected loss module is recorded below, not pickled
        warnings.filterwarnings("ignore", message=r"Attribute '\w+' is an instance of `nn.Module`")
        module.save_hyperparameters(ignore=ignore, frame=_caller_frame())
    for name, part in parts.items():
        if module.hparams.get(name) is None or not _plain(module.hparams[name]):
            module.hparams[name] = record(part)


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool)


def _caller_frame() -> Any:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None and frame.f_back.f_back is not None
    return frame.f_back.f_back  # the module's __init__, which called save_hparams
