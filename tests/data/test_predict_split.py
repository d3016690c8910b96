"""predict_split: ``predict`` embeds the clean split the user names."""

from __future__ import annotations

import pytest
import torch

from lightning_supcon import DigitsDataModule
from lightning_supcon.data.predict_split import PREDICT_SPLITS, check_predict_split


class TestPredictSplit:
    @pytest.mark.parametrize("split", PREDICT_SPLITS)
    def test_each_split_clean_and_in_order(self, split: str) -> None:
        dm = DigitsDataModule(image_size=8, batch_size=32, eval_batch_size=500, predict_split=split)  # type: ignore[arg-type]
        images, labels = (torch.cat(parts) for parts in zip(*dm.predict_dataloader(), strict=True))
        data = dm.train_dataset() if split == "train" else dm.val_dataset()  # digits: test = val
        assert images.shape == (len(data), 1, 8, 8)  # one clean image per sample, no views
        assert labels.tolist() == [int(data[i][1]) for i in range(len(data))]

    def test_default_is_test(self) -> None:
        assert DigitsDataModule().predict_split == "test"

    def test_rejects_other_names(self) -> None:
        with pytest.raises(
            ValueError, match=r"`predict_split` to be one of \('train', 'val', 'test'\), but got 'valid'"
        ):
            check_predict_split("valid")
        with pytest.raises(ValueError, match="predict_split"):
            DigitsDataModule(predict_split="valid")  # type: ignore[arg-type]
