"""MultilabelDigitsDataModule: the digits with attribute labels, multi-hot batches, and the CLI's link to the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_supcon import DigitsDataModule
from lightning_supcon.cli import cli
from lightning_supcon.data import MultilabelDigitsDataModule
from lightning_supcon.data.multilabel import attribute_labels
from tests.helpers import ROOT


class TestAttributeLabels:
    def test_each_attribute_from_its_definition(self) -> None:
        digits = torch.arange(10)
        labels = attribute_labels(digits, ("odd", "greater_4", "has_loop"))
        assert labels[:, 0].tolist() == (digits % 2).tolist()
        assert labels[:, 1].tolist() == (digits > 4).long().tolist()
        assert labels[:, 2].tolist() == [1, 0, 0, 0, 0, 0, 1, 0, 1, 1]  # 0, 6, 8, 9 have a closed loop
        assert labels[[2, 4]].sum() == 0  # no label at all

    def test_order_and_subset(self) -> None:
        assert attribute_labels(torch.tensor([9, 6]), ("has_loop", "odd")).tolist() == [[1, 1], [1, 0]]

    @pytest.mark.parametrize("attributes", [(), ("odd", "odd"), ("odd", "round")])
    def test_bad_attributes(self, attributes: tuple[str, ...]) -> None:
        with pytest.raises(ValueError, match="`attributes` to be distinct names among"):
            attribute_labels(torch.arange(3), attributes)


class TestMultilabelDigitsDataModule:
    def test_same_images_and_split_as_the_digits(self) -> None:
        multi, single = MultilabelDigitsDataModule(attributes=("greater_4", "odd")), DigitsDataModule()
        assert multi.num_classes == 2 and multi.multilabel and not getattr(single, "multilabel", False)
        for mine, theirs in (
            (multi.dataset("train"), single.dataset("train")),
            (multi.dataset("val"), single.dataset("val")),
        ):
            torch.testing.assert_close(mine.images, theirs.images)
            expected = attribute_labels(torch.as_tensor(theirs.labels), ("greater_4", "odd"))
            assert mine.labels.tolist() == expected.tolist() == [mine[i][1].tolist() for i in range(len(mine))]

    def test_batches_carry_multi_hot_labels(self) -> None:
        dm = MultilabelDigitsDataModule(batch_size=16, n_views=2)
        views, labels = next(iter(dm.train_dataloader()))
        assert views.shape == (16, 2, 1, 16, 16) and labels.shape == (16, 3) and labels.dtype == torch.int64
        images, labels = next(iter(dm.val_dataloader()))
        assert images.shape == (16, 1, 16, 16) and labels.shape == (16, 3)


@pytest.mark.parametrize(
    ("config", "multilabel", "num_classes"), [("digits_multilabel", True, 3), ("digits", False, 10)]
)
def test_cli_links_the_label_kind_into_the_model(
    config: str, multilabel: bool, num_classes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = cli(["--config", str(ROOT / "configs" / f"{config}.yaml")], run=False)
    assert app.model.hparams["multilabel"] is multilabel and app.model.hparams["num_classes"] == num_classes
    assert app.model.online.multilabel is multilabel
