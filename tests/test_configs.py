"""Every YAML under ``configs/`` parses with the CLI, the pieces instantiate, and every experiment config runs.

The CIFAR and ImageNet configs run on tiny data sets written in the real on-disk formats (``tests/data/formats.py``)
with CPU, tiny-batch and ``fast_dev_run`` overrides (ResNet-50s included: a step on 2-4 tiny images takes seconds);
linear-evaluation configs get an exported encoder of the architecture they name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from lightning_supcon import OnlineEval, SupConModule
from lightning_supcon.cli import cli, main
from lightning_supcon.encoder_files.export import save_encoder
from lightning_supcon.nets import Backbone
from tests.data.formats import write_cifar10, write_cifar100, write_image_tree

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
BASE = str(CONFIGS / "digits.yaml")
EXPERIMENTS = sorted(CONFIGS.glob("*.yaml"))
# The CIFAR-100 configs are the CIFAR-10 ones with the other data piece (which TestPieces instantiates with every
# model): their whole-run checks go to `make test-slow`, to keep `make test` within its time.
RUN_MATRIX = [pytest.param(p, marks=pytest.mark.slow) if p.name.startswith("cifar100") else p for p in EXPERIMENTS]
PIECES = sorted(CONFIGS.glob("*/*.yaml"))
PIECE_OPTION = {"data": "--data", "model": "--model", "trainer": "--trainer", "logger": "--trainer.logger"}


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.fixture(autouse=True)
def _cpu_one_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Relative output paths of the configs land in ``tmp_path``; one intra-op thread (busy shared machine)."""
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load(path: Path) -> dict[str, Any]:
    """A config with its ``model:`` / ``data:`` pieces read in (a string there is a piece's path, relative to the
    config's folder, as jsonargparse reads it)."""
    loaded = yaml.safe_load(path.read_text())
    config = loaded if isinstance(loaded, dict) else {}
    for key in ("model", "data"):
        if isinstance(config.get(key), str):
            config[key] = _load(path.parent / config[key])
    return config


def _keys(tree: Any) -> set[str]:
    """Every mapping key in a loaded YAML tree."""
    if isinstance(tree, dict):
        return set(tree).union(*(_keys(value) for value in tree.values()))
    if isinstance(tree, list):
        return set().union(*(_keys(value) for value in tree))
    return set()


def _print_config(capsys: pytest.CaptureFixture[str], args: list[str]) -> dict[str, Any]:
    with pytest.raises(SystemExit) as exc:
        main(["fit", *args, "--print_config"])
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    return yaml.safe_load(out)


def _data_overrides(config: dict[str, Any], root: Path, batch_size: int) -> list[str]:
    """Point the config's DataModule at tiny data in the real format under ``root``; CPU-friendly loading."""
    class_path = config["data"]["class_path"]
    args = [f"--data.init_args.batch_size={batch_size}"]
    if "CIFAR" in class_path:
        (write_cifar100 if "CIFAR100" in class_path else write_cifar10)(root)
        args += [f"--data.init_args.data_dir={root}"]
    elif "ImageFolder" in class_path:
        classes = {"a": ["1.png:RGB", "2.jpg:RGB", "3.png:L"], "b": ["4.png:RGB", "5.jpg:RGB", "6.png:RGBA"]}
        train = write_image_tree(root / "train", classes)
        val = write_image_tree(root / "val", {"a": ["v1.png:RGB"], "b": ["v2.png:RGB"]})
        args += [
            f"--data.init_args.train_dir={train}",
            f"--data.init_args.val_dir={val}",
            "--data.init_args.image_size=32",
        ]
    if "num_workers" in config["data"].get("init_args", {}):
        args += ["--data.init_args.num_workers=0", "--data.init_args.pin_memory=false"]
    return args


def _encoder_file(config: dict[str, Any], root: Path) -> str:
    """An exported SupCon encoder of the architecture a linear-probe config names, for its ``checkpoint``."""
    encoder = config["model"]["init_args"]["encoder"]
    in_channels = 1 if "Digits" in config["data"]["class_path"] else 3
    if isinstance(encoder, dict):  # a class_path entry: a Backbone with options
        model = SupConModule(
            encoder=Backbone(**encoder["init_args"], in_channels=in_channels), online=OnlineEval(knn_k=0)
        )
    else:
        model = SupConModule(encoder=encoder, in_channels=in_channels, online=OnlineEval(knn_k=0))
    return str(save_encoder(model, root / "encoder.pt"))


def _run_args(path: Path, root: Path) -> list[str]:
    config = _load(path)
    batch_size = (
        2 if "ImageFolder" in config["data"]["class_path"] else 4 if "CIFAR" in config["data"]["class_path"] else 32
    )
    args = [
        "--config",
        str(path),
        "--trainer.fast_dev_run=true",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.num_nodes=1",
        "--trainer.strategy=auto",
        "--trainer.sync_batchnorm=false",
        "--trainer.precision=32-true",
        f"--trainer.default_root_dir={root}",
        *_data_overrides(config, root / "data", batch_size),
    ]
    if config["model"]["class_path"].endswith("LinearProbeModule"):
        args += [f"--model.init_args.checkpoint={_encoder_file(config, root)}"]
    return args


def _contains(printed: Any, written: Any) -> bool:
    """Whether every value ``written`` in a config is in the ``printed`` (resolved, defaults added) one."""
    if isinstance(written, dict):
        return isinstance(printed, dict) and all(k in printed and _contains(printed[k], v) for k, v in written.items())
    if isinstance(written, list):  # e.g. a list of loggers: each entry with its own defaults added
        return isinstance(printed, list) and len(printed) == len(written) and all(map(_contains, printed, written))
    return bool(printed == written)


# Pieces composed on their own (no experiment config), each data piece with a model piece; the linear probe gets an
# exported encoder of its architecture.
COMPOSED = [
    ("digits", "supcon_small_cnn"),
    ("cifar10", "supcon_resnet50"),
    ("cifar100", "cross_entropy"),
    ("imagenet", "linear_probe"),
]


class TestPieces:
    def test_every_piece_is_composed(self) -> None:
        names = {f"data/{d}.yaml" for d, _ in COMPOSED} | {f"model/{m}.yaml" for _, m in COMPOSED}
        assert names == {f"{p.parent.name}/{p.name}" for p in PIECES if p.parent.name in ("data", "model")}

    @pytest.mark.parametrize(("data", "model"), COMPOSED)
    def test_data_and_model_pieces_instantiate(self, data: str, model: str, tmp_path: Path) -> None:
        data_piece, model_piece = _load(CONFIGS / "data" / f"{data}.yaml"), _load(CONFIGS / "model" / f"{model}.yaml")
        config = {"data": data_piece, "model": model_piece}
        args = ["--data", str(CONFIGS / "data" / f"{data}.yaml"), "--model", str(CONFIGS / "model" / f"{model}.yaml")]
        args += ["--trainer.accelerator=cpu", *_data_overrides(config, tmp_path, 2)]
        if model_piece["class_path"].endswith("LinearProbeModule"):
            args += [f"--model.init_args.checkpoint={_encoder_file(config, tmp_path)}"]
        app = cli(args, run=False)
        for piece, obj in ((data_piece, app.datamodule), (model_piece, app.model)):
            assert f"{type(obj).__module__}.{type(obj).__name__}".endswith(piece["class_path"].rsplit(".", 1)[1])
        assert app.model.hparams["num_classes"] == app.datamodule.num_classes  # linked, written nowhere
        assert app.model.hparams["in_channels"] == app.datamodule.in_channels
        for key, value in model_piece["init_args"].items():
            assert _contains(app.model.hparams[key], value), key

    @pytest.mark.parametrize("path", [p for p in PIECES if p.parent.name not in ("data", "model")], ids=_name)
    def test_other_pieces_parse(self, path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A piece is either one section (``--trainer configs/trainer/cpu.yaml``) or an overlay of a whole config
        (``--config configs/logger/wandb.yaml``, where ``key+`` appends to a list)."""
        written = _load(path)
        if set(written) & {"trainer", "model", "data"}:
            printed = _print_config(capsys, ["--config", BASE, "--config", str(path)])
        else:
            printed = {
                "trainer": _print_config(capsys, ["--config", BASE, PIECE_OPTION[path.parent.name], str(path)])[
                    "trainer"
                ]
            }
            written = {"trainer": written}
        appended = {key: value for key, value in written["trainer"].items() if key.endswith("+")}
        written["trainer"] = {key: value for key, value in written["trainer"].items() if key not in appended}
        assert _contains(printed, written)
        for key, items in appended.items():
            class_paths = [item["class_path"] for item in printed["trainer"][key.rstrip("+")]]
            assert all(item["class_path"] in class_paths for item in items)

    def test_every_value_once(self) -> None:
        """No config names a key twice (YAML keeps the last silently); num_classes always comes from the data."""

        class UniqueKeys(yaml.SafeLoader):
            pass

        def construct(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
            keys = [loader.construct_object(key) for key, _ in node.value]
            assert len(keys) == len(set(keys)), f"duplicate keys in {node.start_mark}"
            return loader.construct_mapping(node)

        UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct)
        for path in EXPERIMENTS + PIECES:
            assert "num_classes" not in _keys(yaml.load(path.read_text(), Loader=UniqueKeys)), path.name


@pytest.mark.parametrize("path", RUN_MATRIX, ids=lambda p: p.name)
def test_fast_dev_run(path: Path, tmp_path: Path) -> None:
    """Every experiment config, with its own encoder (ResNet-50s too), for one training and validation step."""
    app = cli(["fit", *_run_args(path, tmp_path)])
    assert app.trainer.state.finished
    assert any(key.startswith("train/") for key in app.trainer.callback_metrics)
    for key, value in _load(path)["model"]["init_args"].items():  # the config's values reached the model
        if key not in ("encoder", "checkpoint"):
            assert _contains(app.model.hparams[key], value), key


# ---- the command line's bad-input matrix over every shipped config: one error line, or no conflict at all ----


def _error_line(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "Traceback" not in "\n".join(lines)
    errors = [line for line in lines if line.startswith("lightning-supcon: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


@pytest.mark.parametrize("path", RUN_MATRIX, ids=lambda p: p.name)
class TestBadFlags:
    def test_gpu_accelerator_without_gpu_is_one_line(
        self, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        line = _error_line(capsys, ["fit", *_run_args(path, tmp_path), "--trainer.accelerator=gpu"])
        assert "gpu" in line.lower()

    def test_no_progress_bar(self, path: Path, tmp_path: Path) -> None:
        app = cli([*_run_args(path, tmp_path), "--trainer.enable_progress_bar=false"], run=False)
        assert app.trainer.progress_bar_callback is None

    def test_misspelt_key_names_the_closest(
        self, path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        line = _error_line(capsys, ["fit", "--config", str(path), "--model.init_args.encodr=small_cnn"])  # at parsing
        assert "'encodr'" in line and "did you mean 'encoder'" in line


# ---- experiment configs compose: pieces by reference, the standard callbacks from the CLI, the run name once ----


def _model_is_a_piece(path: Path) -> bool:
    return isinstance(yaml.safe_load(path.read_text())["model"], str)


STANDARD_CALLBACKS = ("ModelCheckpoint", "RunCheckpoint", "PreemptionCheckpoint", "MetricsSummary", "RichProgressBar")


class TestComposition:
    @pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
    def test_experiment_holds_only_its_deltas(self, path: Path) -> None:
        raw = yaml.safe_load(path.read_text())
        listed = [item["class_path"] for item in raw["trainer"].get("callbacks", [])]
        assert not [c for c in listed if c.rsplit(".", 1)[-1] in STANDARD_CALLBACKS], listed
        assert raw["trainer"]["default_root_dir"] == f"outputs/{path.stem}"
        body = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert sum(f"outputs/{path.stem}" in line.split("#")[0] for line in body) == 1  # the run name, once

    def test_no_experiment_repeats_a_model_block(self) -> None:
        blocks = [yaml.safe_load(p.read_text())["model"] for p in EXPERIMENTS]
        written = [yaml.safe_dump(b, sort_keys=True) for b in blocks if isinstance(b, dict)]
        assert len(written) == len(set(written))
        pieces = {yaml.safe_dump(_load(p), sort_keys=True) for p in PIECES if p.parent.name == "model"}
        assert not pieces & set(written)  # a block equal to a piece is written as the piece's path

    @pytest.mark.parametrize(
        "path",
        [p for p in EXPERIMENTS if isinstance(yaml.safe_load(p.read_text())["model"], str)],
        ids=lambda p: p.name,
    )
    def test_piece_reference_composes_to_the_piece(self, path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        piece = _load(path.parent / yaml.safe_load(path.read_text())["model"])
        printed = _print_config(capsys, ["--config", str(path)])
        assert _contains(printed["model"], piece)
        for key in ("checkpoint", "preemption", "summary"):
            assert key in printed  # the standard callbacks, from the CLI
