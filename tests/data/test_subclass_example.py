"""The README's "your own data" example: a MultiViewDataModule subclass over a ``.npz`` file, trained for a step.

The class is the one in the README and in the docstring of ``lightning_supcon/data/base.py``; keep them equal.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightning_supcon.cli import main
from lightning_supcon.data import LabelledDataset, MultiViewDataModule
from tests.data.recorder import Recorder, cpu_trainer
from tests.helpers import DIGITS


class MyDataModule(MultiViewDataModule):
    num_classes, in_channels, image_size = 4, 3, 32
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self, path: str = "my_data.npz", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    def dataset(self, split: str) -> LabelledDataset | None:  # as README writes it
        data = np.load(self.path)
        if f"{split}_images" not in data:
            return None
        images = torch.from_numpy(data[f"{split}_images"]).permute(0, 3, 1, 2)  # (N, 3, 32, 32) uint8
        return LabelledDataset(images, data[f"{split}_labels"])


@pytest.fixture
def npz(tmp_path: Path) -> str:
    path = tmp_path / "my_data.npz"
    images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    np.savez(
        path,
        train_images=images[:40],
        train_labels=np.arange(40) % 4,
        val_images=images[40:],
        val_labels=np.arange(10) % 4,
    )
    return str(path)


@pytest.mark.parametrize("n_views", [1, 2, 4])
def test_loaders(npz: str, n_views: int) -> None:
    dm = MyDataModule(npz, batch_size=8, n_views=n_views)
    views, labels = next(iter(dm.train_dataloader()))
    assert views.shape == (8, n_views, 3, 32, 32) and labels.dtype == torch.int64
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (8, 3, 32, 32) and sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_trains(tmp_path: Path, npz: str, augment_on: str) -> None:
    model = Recorder()
    dm = MyDataModule(npz, batch_size=8, augment_on=augment_on)
    cpu_trainer(tmp_path, limit_train_batches=2).fit(model, datamodule=dm)
    assert [tuple(views.shape) for views, _ in model.train_batches] == [(8, 2, 3, 32, 32)] * 2
    assert sum(len(labels) for _, labels in model.val_batches[0]) == 10  # the whole validation set


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            ("num_classes, in_channels, image_size = 4, 3, 32", "image_size = 32"),
            "Forgetful must set `num_classes` or override `classes`.",
        ),
        (
            (
                'return LabelledDataset(images, data[f"{split}_labels"])',
                'return list(zip(images, data[f"{split}_labels"]))',
            ),
            "Expected `Forgetful.dataset('train')` to return a LabelledDataset(images, labels) (samples that carry "
            "their labels) or None, but got list.",
        ),
    ],
    ids=["no num_classes", "a list"],
)
def test_a_mistake_in_your_own_data_module_is_one_line_before_training(
    tmp_path: Path,
    npz: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    line: str,
) -> None:
    """The README's class with one mistake, through the command. Without ``num_classes`` an ``AttributeError`` made
    jsonargparse drop the link into the model in silence (the model keeping 10 classes) and the run fail at its first
    checkpoint; a list was a 69-line traceback."""
    module = tmp_path / "forgetful.py"
    source = Path(__file__).read_text().split("class MyDataModule")[1].split("\n\n\n")[0]
    assert change[0] in source
    module.write_text(
        "import numpy as np\nimport torch\nfrom typing import Any\n"
        "from lightning_supcon.data import LabelledDataset, MultiViewDataModule\n\n\n"
        f"class Forgetful{source.replace(*change)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "forgetful", raising=False)  # each case imports its own file
    args = ["fit", "--config", DIGITS, "--data", "forgetful.Forgetful", "--data.path", npz, "--data.batch_size", "8"]
    with pytest.raises(SystemExit) as exc:
        main([*args, f"--trainer.default_root_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err == [f"lightning-supcon: error: {line}"]
