"""What the ``lightning-supcon`` command prints: every user error as one line, and no noise from Lightning.

A user error (a bad path or value, an unknown or misspelt option, a Trainer flag Lightning rejects, an unreadable or
damaged checkpoint) ends as ``lightning-supcon: error: <one line>`` with exit status 2; set
``LIGHTNING_SUPCON_DEBUG=1`` for the traceback. :func:`quiet_lightning` removes the lines that tell a user nothing
they can act on (a TensorBoard install hint, an advertisement, a deprecation inside Lightning).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import inspect
import logging
import re
import typing
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException

from lightning_supcon.data.labels import SplitTypeError

PREFIX = "lightning-supcon: error:"
# ImportError: an optional extra a config needs is missing (timm, datasets); our messages name the pip command.
# NotImplementedError: a user's own DataModule lacks what it must give (`num_classes`, a split): the message says it.
USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    NotImplementedError,
    SplitTypeError,  # a user's own DataModule returned the wrong type: the message says what to return
    OSError,
    FloatingPointError,
    ImportError,
    MisconfigurationException,
)
_UNKNOWN_OPTION = re.compile(r"class_path '([\w.]+)':\s*\n\s*Option '(\w+)' is not accepted")
_PARSER_KEY = re.compile(r'Parser key "([\w.]+)"')
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (--[\w.+-]+)")
_WORKER = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback")
_EXCEPTION_NAME = re.compile(r"^[\w.]+: ")
_SHORT_ROW = re.compile(r"columns separated by ('[^']*') in row \d+ of .*, but got (\[.*\])\.?$")
#: The column separators a CSV list is recognised by when it was read with another one.
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")


def user_message(err: BaseException) -> str:
    """The message a user needs: the innermost of our own errors when jsonargparse wrapped it (an error raised in a
    model's or DataModule's constructor arrives as a multi-line "Does not validate against any of the Union
    subtypes" report); a Trainer configuration error is marked as one."""
    chain, seen = [], set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        # `raise ... from None` ends the chain there, as Python's own traceback does: that error is the message
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    for inner in reversed(chain):
        if isinstance(inner, USER_ERRORS) and "Does not validate" not in str(inner):
            where = "Trainer: " if isinstance(inner, MisconfigurationException) else ""
            return with_known_fix(where + " ".join(_worker_error(str(inner)).split()))
    return parse_error_line(str(err))


def _worker_error(text: str) -> str:
    """The error a DataLoader worker raised, without the worker's traceback that torch puts before it.

    Example:
        >>> _worker_error("Caught OSError in DataLoader worker process 0.\\nOriginal Traceback (most recent call "
        ...               "last):\\n  File 'x.py', line 1\\nOSError: Cannot read image file 'a.png'")
        "Cannot read image file 'a.png'"
    """
    if not _WORKER.match(text):
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return _EXCEPTION_NAME.sub("", last, count=1)


def with_known_fix(line: str) -> str:
    """``line`` with the option that fixes it when the message shows the fix: a CSV row read with one delimiter
    (:data:`DELIMITERS`) that holds another names ``--data.delimiter``.

    Example:
        >>> line = with_known_fix("Expected >= 2 columns separated by ',' in row 1 of 'a.csv', but got ['a;b'].")
        >>> line.split(": ", 1)[1]
        "it is separated by ';'? set --data.delimiter ';'"
    """
    short = _SHORT_ROW.search(line)
    if short:
        used, cells = ast.literal_eval(short.group(1)), ast.literal_eval(short.group(2))
        other = [d for d in DELIMITERS if d != used and d in used.join(cells)]
        if other:
            shell = "'\\t'" if other[0] == "\t" else repr(other[0])
            return f"{line.rstrip('.')}: it is separated by {other[0]!r}? set --data.delimiter {shell}"
    return line


def class_options(class_path: str) -> list[str]:
    """The constructor arguments of ``class_path`` (and of the parents its ``**kwargs`` go to), with the options of
    the parts it receives as dotted paths: ``loss.init_args.temperature`` for an injected loss,
    ``schedule.warmup_epochs`` for a dataclass group, ``optimizer.init_args.lr`` for an optimiser callable.

    Example:
        >>> "loss.init_args.temperature" in class_options("lightning_supcon.SupConModule")
        True
    """
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    return _options(cls, nested=True)


def _options(cls: type, nested: bool) -> list[str]:
    options: list[str] = []
    for klass in inspect.getmro(cls):
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()  # type: ignore[misc]
        try:
            hints = typing.get_type_hints(klass.__init__)  # type: ignore[misc]
        except Exception:  # an annotation that cannot be resolved: no nested options from this class
            hints = {}
        for p in params:
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            options.append(p.name)
            if nested:
                options += [f"{p.name}.{sub}" for sub in _part_options(hints.get(p.name))]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(options))


def _part_options(annotation: Any) -> list[str]:
    """Options of an injected part, relative to its argument (``init_args.x`` for a class, ``x`` for a dataclass)."""
    for part in (*typing.get_args(annotation), annotation):
        if dataclasses.is_dataclass(part) and isinstance(part, type):
            return [field.name for field in dataclasses.fields(part)]
        if inspect.isclass(part) and issubclass(part, torch.optim.Optimizer):
            return [f"init_args.{name}" for name in _options(torch.optim.SGD, nested=False) if name != "params"]
        if inspect.isclass(part) and part.__module__.startswith("lightning_supcon"):
            return [f"init_args.{name}" for name in _options(part, nested=False)]
        if typing.get_args(part) and part is not annotation:
            found = _part_options(part)  # e.g. the return type inside Callable[[Iterable], Optimizer]
            if found:
                return found
    return []


def closest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice whose last dotted name is closest to ``word`` (difflib), or ``""``.

    Example:
        >>> closest("temprature", ["temperature", "lr"])
        " (did you mean 'temperature'?)"
        >>> closest("temprature", ["knn_temperature", "loss.init_args.temperature"])
        " (did you mean 'loss.init_args.temperature'?)"
        >>> closest("--trainer.max_epoch", ["--trainer.max_epochs", "--trainer.max_steps"])
        " (did you mean '--trainer.max_epochs'?)"
    """
    by_name: dict[str, str] = {}
    for choice in choices:
        by_name.setdefault(choice.rsplit(".", 1)[-1], choice)
    match = difflib.get_close_matches(word.rsplit(".", 1)[-1], list(by_name), n=1, cutoff=0.6)
    return f" (did you mean {by_name[match[0]]!r}?)" if match else ""


def parse_error_line(message: str, options: Iterable[str] = (), argv: Sequence[str] = ()) -> str:
    """One line from a jsonargparse error report (several lines of union diagnostics).

    Args:
        message: jsonargparse's message.
        options: The parser's option strings, for the closest match to an unrecognized one.
        argv: The command line, to tell an option given before the ``--data CLASS`` (or ``--model CLASS``) that
            accepts it (jsonargparse applies it to the class chosen so far) from a misspelt one.

    Example:
        >>> report = (
        ...     'Parser key "model":\\n  Does not validate against any of the Union subtypes\\n  Errors:\\n'
        ...     "    - Problem with given class_path 'lightning_supcon.SupConModule':\\n"
        ...     "        Option 'temprature' is not accepted\\n    - Expected a <class 'NoneType'>"
        ... )
        >>> print(parse_error_line(report).replace(" (did", "\\n(did"))
        --model.init_args.temprature: 'temprature' is not accepted by lightning_supcon.SupConModule
        (did you mean 'loss.init_args.temperature'?)
    """
    unknown = _UNKNOWN_OPTION.search(message)
    if unknown:
        class_path, option = unknown.groups()
        key = _PARSER_KEY.search(message)
        later = key and _later_class(argv, key.group(1), option, class_path)
        if key and later:
            flag = f"--{key.group(1)}"
            return (
                f"{flag}.{option} comes before `{flag} {later}`, which accepts it: put it after (an option applies "
                f"to the class chosen so far, here {class_path})"
            )
        where = f"--{key.group(1)}.init_args.{option}: " if key else ""
        hint = closest(option, class_options(class_path))
        return f"{where}{option!r} is not accepted by {class_path}{hint}"
    unrecognized = _UNRECOGNIZED.search(message)
    if unrecognized:
        flag = unrecognized.group(1)
        return f"unrecognized option {flag}{closest(flag, options)}"
    innermost = _innermost_reason(message)
    if innermost:
        return innermost
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("- ") and not line.startswith("- Expected a <class 'NoneType'>"):
            detail = [line[2:]]
            for more in lines[i + 1 :]:  # the nested lines of this reason, up to the next one
                if more.startswith(("- ", "Given value")):
                    break
                detail.append(more)
            return " ".join(" ".join(detail).split())
    return " ".join(message.split())


def _later_class(argv: Sequence[str], key: str, option: str, class_path: str) -> str:
    """The class chosen by a ``--key CLASS`` after ``--key.option`` on the command line when it accepts ``option``,
    else ``""``."""
    flags = (f"--{key}.{option}", f"--{key}.init_args.{option}")
    given = [i for i, arg in enumerate(argv) if arg.split("=", 1)[0] in flags]
    if not given:
        return ""
    for i in range(given[0] + 1, len(argv)):
        name, eq, value = argv[i].partition("=")
        if name in (f"--{key}", f"--{key}.class_path"):
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            if value and value != class_path and option in class_options(value):
                return value
    return ""


_STRUCTURE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Problem with given class_path",
    "Given value",
    "Expected a <class 'NoneType'>",
    "Expected a path but",
    "Parser key",
)
_KEY = re.compile(r'^Parser key "([\w.]+)":')


def _innermost_reason(message: str) -> str:
    """The deepest reason of a nested jsonargparse report, prefixed by the option it concerns.

    Example:
        >>> report = (
        ...     'Parser key "model":\\n  Errors:\\n    - Problem with given class_path x.M:\\n'
        ...     '        Parser key "loss":\\n          Errors:\\n            - Problem with given class_path x.L:\\n'
        ...     '                Parser key "temperature":\\n'
        ...     "                  Expected a float. Got value: foo\\n"
        ...     "    - Expected a <class 'NoneType'>"
        ... )
        >>> _innermost_reason(report)
        '--model.init_args.loss.init_args.temperature: Expected a float. Got value: foo'
    """
    keys: list[tuple[int, str]] = []  # the enclosing "Parser key" lines: (indent, key)
    best: tuple[int, str, list[str]] | None = None
    for raw in message.splitlines():
        text = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if not text:
            continue
        keys = [(i, k) for i, k in keys if i < indent]
        key = _KEY.match(text)
        if key:
            keys.append((indent, key.group(1)))
            continue
        reason = text[2:] if text.startswith("- ") else text
        if reason.startswith(_STRUCTURE) or (best is not None and indent <= best[0]):
            continue
        best = (indent, reason, [k for _, k in keys])
    if best is None:
        return ""
    _, reason, path = best
    return f"--{'.init_args.'.join(path)}: {reason}" if path else reason


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def quiet_lightning() -> None:
    """Remove Lightning's messages that a user of this command cannot act on.

    - the TensorBoard install paragraph: the command chooses its logger itself (``RunLogger``, see ``cli.py``);
    - the LitLogger advertisement printed at every start;
    - a ``FutureWarning`` that Lightning's own ``_pytree`` helper triggers in torch (``LeafSpec`` deprecated);
    - "Checkpoint directory ... exists and is not empty": a run folder is reused only by its own resumed run.
    """
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropMessages("\N{ELECTRIC LIGHT BULB} Tip: For seamless cloud logging"))
    warnings.filterwarnings("ignore", message=r"Starting from v1\.9\.0, `tensorboardX` has been removed")
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
