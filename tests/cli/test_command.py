"""The ``lightning-supcon`` command: short errors, config printing, a real run through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from lightning_supcon import OnlineEval, SupConModule
from lightning_supcon.cli import cli, main
from lightning_supcon.encoder_files.export import save_encoder
from lightning_supcon.models.cross_entropy import CrossEntropyModule
from lightning_supcon.models.linear_probe import LinearProbeModule
from tests.data.formats import write_image_tree
from tests.helpers import DIGITS_LINEAR, cli_error, fit_args, one_error_line

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "configs" / "digits.yaml")


def _fast(tmp_path: Path) -> list[str]:
    return [
        "--trainer.fast_dev_run=true",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.batch_size=32",
    ]


class TestCLI:
    def test_typo_in_config_key_is_a_short_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", DIGITS, "--model.init_args.temprature=0.2"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "'temprature' is not accepted" in err
        assert "did you mean 'loss.init_args.temperature'" in err  # the injected loss's option, by its full path
        assert "Traceback" not in err
        assert len(err.splitlines()) < 15

    def test_user_error_is_one_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", DIGITS, *_fast(tmp_path), "--data.init_args.batch_size=5000"])
        assert exc.value.code == 2
        err_lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert err_lines == [err_lines[0]] and "lightning-supcon: error:" in err_lines[0]
        assert "batch_size" in err_lines[0]

    def test_debug_env_shows_the_exception(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LIGHTNING_SUPCON_DEBUG", "1")
        with pytest.raises(ValueError, match="batch_size"):
            main(["fit", "--config", DIGITS, *_fast(tmp_path), "--data.init_args.batch_size=5000"])

    def test_print_config_links_num_classes(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["fit", "--config", DIGITS, "--print_config"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "class_path: lightning_supcon.SupConModule" in out
        assert "temperature: 0.1" in out

    def test_instantiation_links_data_into_model(self) -> None:
        app = cli(["--config", DIGITS], run=False)
        assert app.model.hparams["num_classes"] == 10
        assert app.model.hparams["in_channels"] == 1

    def test_fit_then_validate_from_checkpoint(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        main(["fit", "--config", DIGITS, *_fast(tmp_path)])
        assert "val/probe_top1" in capsys.readouterr().out
        main(["test", "--config", DIGITS, *_fast(tmp_path)])

    def test_help_says_what_the_tool_is_and_where_the_options_are(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "Supervised Contrastive Learning" in " ".join(capsys.readouterr().out.splitlines()[:10])
        with pytest.raises(SystemExit):
            main(["fit", "--help"])
        assert "--model.help lightning_supcon.SupConModule" in " ".join(capsys.readouterr().out.splitlines()[:10])

    def test_model_help_lists_the_projects_options_not_torch_nn(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit):
            main(["fit", "--model.help", "lightning_supcon.SupConModule"])
        out = capsys.readouterr().out
        assert "--model.encoder" in out and "lightning_supcon.SupConModule" in out
        assert "torch.nn.Linear," not in out and len(out.splitlines()) < 300

    def test_module_entry_point(self) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "lightning_supcon", "--help"], capture_output=True, text=True, check=True
        ).stdout
        assert "fit" in out and "validate" in out and "predict" in out


# ---- bad inputs: one error line, status 2, an earlier run's files untouched ----


def _image_folder(train: Path, val: Path) -> list[str]:
    return [
        "--data=lightning_supcon.ImageFolderDataModule", f"--data.init_args.train_dir={train}",
        f"--data.init_args.val_dir={val}", "--data.init_args.image_size=8", "--data.init_args.batch_size=2",
    ]  # fmt: skip


class TestBadInputs:
    def test_missing_image_folder(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        line = one_error_line(cli_error(capsys, fit_args(*_image_folder(workdir / "nope", workdir / "nope")), workdir))
        assert "nope" in line

    def test_cifar_without_download(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        args = fit_args("--data=lightning_supcon.CIFAR10DataModule", f"--data.init_args.data_dir={workdir / 'none'}")
        line = one_error_line(cli_error(capsys, args, workdir))
        assert "none" in line and "download" in line

    def test_empty_data_dir(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        (workdir / "empty").mkdir()
        line = one_error_line(
            cli_error(capsys, fit_args(*_image_folder(workdir / "empty", workdir / "empty")), workdir)
        )
        assert "empty" in line and "sub-folder" in line

    def test_val_class_unknown_to_train(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_image_tree(workdir / "train", {"a": ["1.png:RGB", "2.png:RGB"], "b": ["1.png:RGB", "2.png:RGB"]})
        write_image_tree(workdir / "val", {"a": ["1.png:RGB"], "c": ["1.png:RGB"]})
        line = one_error_line(cli_error(capsys, fit_args(*_image_folder(workdir / "train", workdir / "val")), workdir))
        assert "'c'" in line or "/c" in line

    def test_a_class_too_small_to_hold_out_is_our_line_not_scikit_learns(
        self, workdir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        write_image_tree(workdir / "train", {"a": [f"{i}.png:RGB" for i in range(6)], "b": ["1.png:RGB"]})
        args = ["--data=lightning_supcon.ImageFolderDataModule", f"--data.train_dir={workdir / 'train'}"]
        line = one_error_line(cli_error(capsys, fit_args(*args, "--data.val_fraction=0.3"), workdir))
        assert "Cannot hold out a stratified validation set" in line and "give a validation split" in line

    def test_corrupt_image(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        write_image_tree(workdir / "train", {"a": ["1.png:corrupt", "2.png:corrupt"], "b": ["1.png:corrupt"]})
        line = one_error_line(
            cli_error(capsys, fit_args(*_image_folder(workdir / "train", workdir / "train")), workdir)
        )
        assert "1.png" in line and "--data.skip_corrupt true" in line  # the fix the source offers

    def test_corrupt_image_in_a_loader_worker_is_one_line(
        self, workdir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """torch re-raises a worker's error with the worker's traceback inside its message: that was the line."""
        write_image_tree(workdir / "train", {"a": ["1.png:corrupt", "2.png:corrupt"], "b": ["1.png:corrupt"]})
        args = fit_args(*_image_folder(workdir / "train", workdir / "train"), "--data.num_workers=1")
        line = one_error_line(cli_error(capsys, args, workdir))
        assert "Cannot read image file" in line and "Traceback" not in line and "--data.skip_corrupt" in line

    @pytest.mark.parametrize(("separator", "flag"), [(";", "--data.delimiter ';'"), ("\t", "--data.delimiter '\\t'")])
    def test_csv_with_another_delimiter_names_the_flag(
        self, workdir: Path, capsys: pytest.CaptureFixture[str], separator: str, flag: str
    ) -> None:
        write_image_tree(workdir / "img", {"a": ["1.png:RGB"], "b": ["2.png:RGB"]})
        (workdir / "train.csv").write_text(f"path{separator}label\nimg/a/1.png{separator}a\nimg/b/2.png{separator}b\n")
        args = fit_args("--data=lightning_supcon.CsvDataModule", f"--data.train_list={workdir / 'train.csv'}")
        line = one_error_line(cli_error(capsys, args, workdir))
        assert "columns separated by ','" in line and line.endswith(f"set {flag}")

    def test_option_before_the_data_class_that_accepts_it_says_to_put_it_after(
        self, workdir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--data.resize applies to the config's DigitsDataModule, chosen so far: main said "did you mean
        'image_size'?"."""
        args = fit_args("--data.resize=16", "--data", "lightning_supcon.CsvDataModule", "--data.train_list=x.csv")
        line = one_error_line(cli_error(capsys, args, workdir))
        assert (
            "--data.resize comes before `--data lightning_supcon.CsvDataModule`, which accepts it: put it after" in line
        )
        assert "did you mean" not in line

    def test_evaluation_crop_larger_than_resize_is_one_line(
        self, workdir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        write_image_tree(workdir / "train", {"a": ["1.png:RGB", "2.png:RGB"], "b": ["1.png:RGB", "2.png:RGB"]})
        args = [*_image_folder(workdir / "train", workdir / "train"), "--data.image_size=32", "--data.resize=16"]
        line = one_error_line(cli_error(capsys, fit_args(*args), workdir))
        assert "resize 16 < image_size 32, which pads the crop with zeros: set --data.resize >= 32" in line

    def test_batch_larger_than_dataset_with_drop_last(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        line = one_error_line(cli_error(capsys, fit_args("--data.init_args.batch_size=5000"), workdir))
        assert "batch_size" in line and "drop_last" in line

    def test_unknown_encoder_names_the_choices(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        text = "\n".join(cli_error(capsys, fit_args("--model.init_args.encoder=resnet9000"), workdir))
        assert "'resnet9000'" in text and "small_cnn" in text

    def test_unknown_encoder_is_one_line(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        one_error_line(cli_error(capsys, fit_args("--model.init_args.encoder=resnet9000"), workdir))

    @pytest.mark.parametrize(
        ("module", "args", "extra"),
        [
            ("timm", ["--model.init_args.encoder=timm/resnet18"], "lightning-supcon[timm]"),
            (
                "datasets",
                ["--data=lightning_supcon.HFDataModule", "--data.path=nowhere", "--data.channels=1"],
                "lightning-supcon[hf]",
            ),
        ],
    )
    def test_a_missing_optional_extra_is_one_line_naming_it(
        self,
        workdir: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        module: str,
        args: list[str],
        extra: str,
    ) -> None:
        monkeypatch.setitem(sys.modules, module, None)  # `import timm` / `import datasets` raise ImportError
        assert extra in one_error_line(cli_error(capsys, fit_args(*args), workdir))

    def test_wrong_type_config_value(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        lines = cli_error(capsys, fit_args("--data.init_args.batch_size=abc"), workdir)
        text = "\n".join(lines)
        assert "batch_size" in text and "abc" in text and len(lines) < 15

    def test_cross_entropy_checkpoint_into_linear_probe(
        self, workdir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        model = CrossEntropyModule(encoder="small_cnn", in_channels=1)
        checkpoint: dict[str, Any] = {"state_dict": model.state_dict(), "pytorch-lightning_version": pl.__version__}
        model.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, workdir / "ce.ckpt")
        args = ["fit", "--config", DIGITS_LINEAR, "--trainer.fast_dev_run=true", "--model.init_args.checkpoint=ce.ckpt"]
        text = "\n".join(cli_error(capsys, args, workdir))  # one line once cli.main unwraps jsonargparse's errors
        assert "'cross_entropy'" in text and "ce.ckpt" in text

    def test_silent_substitution_ckpt_path_of_another_kind_of_model(
        self, workdir: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # LightningCLI swapped in the checkpoint's own model class: the SupCon config reported a probe's top-1.
        probe = LinearProbeModule(encoder="small_cnn", in_channels=1, num_classes=10)
        checkpoint: dict[str, Any] = {
            "state_dict": probe.state_dict(),
            "pytorch-lightning_version": pl.__version__,
            "hyper_parameters": {"_class_path": "lightning_supcon.LinearProbeModule", "in_channels": 1},
        }
        probe.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, workdir / "probe.ckpt")
        args = ["validate", "--config", DIGITS, "--trainer.fast_dev_run=true", "--ckpt_path=probe.ckpt"]
        line = one_error_line(cli_error(capsys, args, workdir))
        assert "--ckpt_path probe.ckpt holds a linear_probe model (lightning_supcon.LinearProbeModule)" in line
        assert "the config's model is lightning_supcon.SupConModule (supcon)" in line

    def test_checkpoint_of_another_encoder(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        save_encoder(SupConModule(encoder="small_cnn", in_channels=3, online=OnlineEval(knn_k=0)), workdir / "rgb.pt")
        args = ["fit", "--config", DIGITS_LINEAR, "--trainer.fast_dev_run=true", "--model.init_args.checkpoint=rgb.pt"]
        lines = cli_error(capsys, args, workdir)
        assert "rgb.pt" in "\n".join(lines)

    def test_labels_outside_num_classes(self) -> None:
        model = SupConModule(in_channels=1, num_classes=3, online=OnlineEval(knn_k=0))
        views, labels = torch.randn(4, 2, 1, 8, 8), torch.tensor([0, 1, 2, 3])
        with pytest.raises(ValueError, match=r"Labels must lie in \[-1, num_classes=3\), but got values in \[0, 3\]"):
            model.training_step((views, labels), 0)

    def test_unknown_labels_in_a_module_that_cannot_take_them_say_so(self) -> None:
        model = CrossEntropyModule(
            encoder="small_cnn", in_channels=1, num_classes=3, online=OnlineEval(probe=False, knn_k=0)
        )
        with pytest.raises(ValueError, match=r"\[-1, 2\]\. \(-1 is an unknown label.*only SupConModule"):
            model.training_step((torch.randn(3, 1, 8, 8), torch.tensor([0, -1, 2])), 0)


# ---- checkpoints: damaged files, the newest readable one, a clean console ----


def _damaged(path: Path, kind: str) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(256)}}, path)
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "not-torch": b"epoch,loss\n0,1.0\n"}[kind])
    return path


class TestDamagedCheckpoints:
    @pytest.mark.parametrize("kind", ["empty", "truncated", "not-torch"])
    def test_explicit_unreadable_file_is_one_line(
        self, workdir: Path, capsys: pytest.CaptureFixture[str], kind: str
    ) -> None:
        path = _damaged(workdir / f"{kind}.ckpt", kind)
        line = one_error_line(cli_error(capsys, fit_args("--ckpt_path", str(path)), workdir))
        assert f"{kind}.ckpt" in line

    def test_last_skips_a_truncated_newest_file_with_one_warning(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.chdir(tmp_path)
        small = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.callbacks=[]",
                 "--trainer.enable_progress_bar=false", "--data.init_args.batch_size=32"]  # fmt: skip
        main(["fit", "--config", DIGITS, "--trainer.max_epochs=1", *small])
        last = tmp_path / "outputs/digits/version_0/checkpoints/last.ckpt"
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
        capsys.readouterr()
        main(["fit", "--config", DIGITS, "--trainer.max_epochs=2", "--ckpt_path=last", *small])
        out, err = capsys.readouterr()
        warnings = [line for line in err.splitlines() if "skipped" in line]
        assert len(warnings) == 1 and "last.ckpt" in warnings[0]
        assert "Final metrics after 2 epochs (4 steps)" in out  # resumed from epoch=0-step=2.ckpt

    @pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
    def test_last_without_a_checkpoint_is_an_error_outside_fit(
        self, workdir: Path, capsys: pytest.CaptureFixture[str], subcommand: str
    ) -> None:
        """Evaluating "the newest checkpoint" of a folder without one must not score an untrained model."""
        args = [subcommand, "--config", DIGITS, "--ckpt_path=last", f"--trainer.default_root_dir={workdir / 'none'}"]
        line = one_error_line(cli_error(capsys, args, workdir))
        assert "no readable checkpoint" in line and "none" in line


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--model.init_args.loss.init_args.temperature=foo", "--model.init_args.loss.init_args.temperature: Expected"),
        ("--model.init_args.schedule.warmup_epochs=x", "--model.init_args.schedule.warmup_epochs: Expected"),
        ("--model.init_args.optimizer=torch.optim.Nope", "has no attribute 'Nope'"),
    ],
)
def test_a_bad_value_of_an_injected_part_names_the_option_and_the_reason(
    workdir: Path, capsys: pytest.CaptureFixture[str], flag: str, expected: str
) -> None:
    line = one_error_line(cli_error(capsys, fit_args(flag), workdir))
    assert expected in line and not line.endswith(":"), line


def test_an_abbreviated_option_is_not_taken_for_the_full_one(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_error_line(cli_error(capsys, fit_args("--trainer.max_epoch=2"), workdir))
    assert "--trainer.max_epoch " in line and "did you mean '--trainer.max_epochs'" in line


def test_fast_dev_run_console_is_clean(tmp_path: Path) -> None:
    """No TensorBoard install paragraph, no LitLogger tip, no Lightning-internal deprecation, no "directory exists"
    on a rerun; stage 2 explains its frozen encoder's eval-mode modules in one line instead of Lightning's warning."""
    save_encoder(SupConModule(encoder="small_cnn", in_channels=1, online=OnlineEval(knn_k=0)), tmp_path / "encoder.pt")
    command = [sys.executable, "-m", "lightning_supcon", "fit", "--trainer.fast_dev_run=true"]
    stage_two = [*command, "--config", DIGITS_LINEAR, "--model.init_args.checkpoint=encoder.pt"]
    with subprocess.Popen(stage_two, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as two:
        outputs = []
        for _ in range(2):  # the demo config twice: the rerun finds its output folder
            result = subprocess.run([*command, "--config", DIGITS], cwd=tmp_path, capture_output=True, text=True)
            assert result.returncode == 0, result.stderr[-3000:]
            outputs.append(result.stdout + result.stderr)
        stage_two_output, _ = two.communicate(timeout=300)
    assert two.returncode == 0, stage_two_output[-3000:]
    outputs.append(stage_two_output)
    noise = ("tensorboardX", "litlogger", "is deprecated", "exists and is not empty", "module(s) in eval mode")
    for output in outputs:
        assert not [word for word in noise if word in output], output[-3000:]
    assert "frozen encoder" in outputs[2]
