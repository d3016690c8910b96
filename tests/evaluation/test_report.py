"""evaluate_embeddings against direct computations with scikit-learn: weighted kNN, nearest-neighbour retrieval,
k-means NMI/AMI and the out-of-distribution metrics of the k-th neighbour distance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_mutual_info_score,
    average_precision_score,
    normalized_mutual_info_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from lightning_supcon.evaluation import (
    METRICS,
    MULTILABEL_METRICS,
    OOD_METRICS,
    Embeddings,
    evaluate_embeddings,
    format_table,
    knn_accuracy,
    ood_scores,
)
from lightning_supcon.evaluation.embeddings import EmbeddingsError


def _clusters(n: int, classes: int, dim: int, seed: int, spread: float = 1.2) -> Embeddings:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(classes, (n,), generator=gen)
    return Embeddings(centres[labels] + spread * torch.randn(n, dim, generator=gen), labels, Path(f"{seed}.pt"))


def _sklearn_knn(train: Embeddings, k: int, temperature: float) -> KNeighborsClassifier:
    """Weighted kNN as scikit-learn computes it: cosine distance d = 1 - s, weight exp(s / T) = exp((1 - d) / T)."""
    knn = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1.0 - d) / temperature)
    )
    return knn.fit(train.features.double().numpy(), train.labels.numpy())


class TestKnnAccuracy:
    @pytest.mark.parametrize("k", [1, 7, 40])
    @pytest.mark.parametrize("temperature", [0.07, 0.5])
    def test_equals_scikit_learn_weighted_knn(self, k: int, temperature: float) -> None:
        # Fractions are float32 (abs=1e-6); one sample of 120 is 0.008.
        train, test = _clusters(300, 8, 16, seed=0), _clusters(120, 8, 16, seed=1)
        ours = knn_accuracy(train, test, k=k, temperature=temperature)
        knn = _sklearn_knn(train, k, temperature)
        query = test.features.double().numpy()
        assert ours["knn_top1"] == pytest.approx(float((knn.predict(query) == test.labels.numpy()).mean()), abs=1e-6)
        scores = knn.predict_proba(query)  # (Q, C) weighted votes, normalised; 0 for classes without a vote
        scores[scores == 0] = -np.inf
        top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
        voted = np.take_along_axis(scores, top5, axis=1) > -np.inf
        hits = ((top5 == test.labels.numpy()[:, None]) & voted).any(axis=1)
        assert ours["knn_top5"] == pytest.approx(float(hits.mean()), abs=1e-6)

    def test_unweighted_limit_equals_scikit_learn_majority_vote(self) -> None:
        # With a huge temperature every vote weighs ~1: a majority vote; k odd and 2 classes, so no tie.
        train, test = _clusters(200, 2, 8, seed=2, spread=3.0), _clusters(80, 2, 8, seed=3, spread=3.0)
        knn = KNeighborsClassifier(n_neighbors=9, metric="cosine", algorithm="brute").fit(
            train.features.numpy(), train.labels.numpy()
        )
        expected = float((knn.predict(test.features.numpy()) == test.labels.numpy()).mean())
        assert knn_accuracy(train, test, k=9, temperature=1e6)["knn_top1"] == pytest.approx(expected)
        assert 0.5 < expected < 1.0  # not a trivial case

    def test_any_label_values_and_a_class_missing_from_the_bank(self) -> None:
        bank = Embeddings(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([10, 30]), Path("train.pt"))
        query = Embeddings(torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.7, 0.7]]), torch.tensor([10, 30, 20]), Path("v"))
        assert knn_accuracy(bank, query, k=1)["knn_top1"] == pytest.approx(2 / 3)


class TestEvaluateEmbeddings:
    def test_every_metric_against_direct_computations(self) -> None:
        train, test = _clusters(400, 6, 12, seed=4), _clusters(150, 6, 12, seed=5)
        report = evaluate_embeddings(train, test, k=10, temperature=0.1, seed=3)
        metrics = report["metrics"]
        assert list(metrics) == list(METRICS)
        assert report["sizes"] == {"train": 400, "test": 150, "dim": 12, "classes": 6}
        assert report["settings"] == {"k": 10, "temperature": 0.1, "seed": 3}
        # Precision@1: the nearest other test sample (cosine) has the query's class.
        neighbours = NearestNeighbors(n_neighbors=2, metric="cosine").fit(test.features.double().numpy())
        nearest = neighbours.kneighbors(test.features.double().numpy(), return_distance=False)[:, 1]
        labels = test.labels.numpy()
        assert metrics["precision_at_1"] == pytest.approx(float((labels[nearest] == labels).mean()), abs=1e-6)
        # R-Precision with R = the other samples of the query's class, by a loop.
        sims = torch.nn.functional.normalize(test.features.double(), dim=1)
        sims = (sims @ sims.T).fill_diagonal_(-math.inf).numpy()
        r_precisions = []
        for i in range(len(labels)):
            r = int((labels == labels[i]).sum()) - 1
            order = np.argsort(-sims[i], kind="stable")[:r]
            r_precisions.append((labels[order] == labels[i]).mean())
        assert metrics["r_precision"] == pytest.approx(float(np.mean(r_precisions)), abs=1e-6)
        # k-means on the normalised test features, scored by scikit-learn.
        clusters = KMeans(n_clusters=6, n_init=10, random_state=3).fit_predict(
            torch.nn.functional.normalize(test.features.double(), dim=1).numpy()
        )
        assert metrics["kmeans_nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters))
        assert metrics["kmeans_ami"] == pytest.approx(adjusted_mutual_info_score(labels, clusters))
        assert 0.3 < metrics["kmeans_nmi"] < 1.0

    def test_separated_classes_score_one(self) -> None:
        train, test = _clusters(200, 5, 8, seed=6, spread=0.01), _clusters(50, 5, 8, seed=7, spread=0.01)
        metrics = evaluate_embeddings(train, test, k=5)["metrics"]
        assert all(value == pytest.approx(1.0) for value in metrics.values()), metrics

    def test_unknown_labels_are_left_out(self) -> None:
        """A semi-supervised run's training split holds samples labelled -1: far off and numerous, they won every
        vote as a class of their own (0% top-1); left out, the report equals the one without them."""
        train, test = _clusters(200, 5, 8, seed=6, spread=0.01), _clusters(50, 5, 8, seed=7, spread=0.01)
        gen = torch.Generator().manual_seed(3)
        unlabelled = Embeddings(
            torch.cat([train.features, test.features[:40] + 0.001 * torch.randn(40, 8, generator=gen)]),
            torch.cat([train.labels, torch.full((40,), -1)]),
            train.path,
        )
        report = evaluate_embeddings(unlabelled, test, k=5)
        assert report["metrics"] == evaluate_embeddings(train, test, k=5)["metrics"]
        assert report["sizes"]["train"] == 200 and report["sizes"]["unknown_train"] == 40
        with pytest.raises(EmbeddingsError, match="every label is -1"):
            evaluate_embeddings(Embeddings(train.features, torch.full((200,), -1), train.path), test)

    def test_fewer_than_five_classes_has_no_top5(self) -> None:
        train, test = _clusters(40, 3, 4, seed=8), _clusters(20, 3, 4, seed=9)
        report = evaluate_embeddings(train, test, k=500)
        assert "knn_top5" not in report["metrics"] and report["settings"]["k"] == 40

    def test_table_lists_every_metric(self) -> None:
        table = format_table(evaluate_embeddings(_clusters(60, 5, 4, seed=10), _clusters(30, 5, 4, seed=11)))
        assert len(table.splitlines()) == 2 + len(METRICS)
        assert all(description in table for description in METRICS.values())


class TestKmeansOneClass:
    def test_one_class_split_is_nan_not_100_percent(self) -> None:
        # scikit-learn scores one class against one cluster as NMI = AMI = 1.0: a perfect 100% for a split that has
        # nothing to cluster. The report says NaN (null in the JSON) instead.
        train, test = _clusters(40, 3, 4, seed=12), _clusters(20, 3, 4, seed=13)
        one_class = Embeddings(test.features, torch.zeros(20, dtype=torch.long), test.path)
        metrics = evaluate_embeddings(train, one_class, k=5)["metrics"]
        assert math.isnan(metrics["kmeans_nmi"]) and math.isnan(metrics["kmeans_ami"])
        assert normalized_mutual_info_score(np.zeros(20), np.zeros(20)) == 1.0  # what the unguarded score would be


def _multi_hot(n: int, labels: int, dim: int, seed: int) -> Embeddings:
    """Features near the sum of their labels' centres: label sets of a multi-label data set (some empty)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(labels, dim, generator=torch.Generator().manual_seed(98))
    targets = (torch.rand(n, labels, generator=gen) < 0.4).long()
    return Embeddings(targets.float() @ centres + 0.5 * torch.randn(n, dim, generator=gen), targets, Path(f"{seed}.pt"))


class TestMultilabel:
    def test_multilabel_knn_and_retrieval_against_direct_computations(self) -> None:
        from sklearn.metrics import f1_score

        from tests.metrics.test_knn_multilabel import reference_probabilities

        train, test = _multi_hot(80, 4, 6, seed=20), _multi_hot(30, 4, 6, seed=21)
        report = evaluate_embeddings(train, test, k=7, temperature=0.2)
        metrics = report["metrics"]
        assert list(metrics) == ["knn_map", "knn_f1", "knn_accuracy", "precision_at_1", "r_precision", "map_at_r"]
        assert report["sizes"] == {"train": 80, "test": 30, "dim": 6, "labels": 4}
        probabilities = reference_probabilities(test.features, train.features, train.labels, 7, 0.2).numpy()
        truth, predicted = test.labels.numpy(), (probabilities >= 0.5).astype(int)
        assert metrics["knn_accuracy"] == pytest.approx(float((predicted == truth).mean()), abs=1e-6)
        assert metrics["knn_f1"] == pytest.approx(
            f1_score(truth, predicted, average="macro", zero_division=0), abs=1e-6
        )
        ap = [average_precision_score(truth[:, label], probabilities[:, label]) for label in range(4)]
        assert metrics["knn_map"] == pytest.approx(float(np.mean(ap)), abs=1e-5)
        assert 0.3 < metrics["knn_f1"] < 1.0  # neither trivial: the comparison can fail
        # Retrieval: each label set is a class.
        sets = torch.unique(test.labels, dim=0, return_inverse=True)[1]
        as_classes = evaluate_embeddings(Embeddings(train.features, train.labels, train.path), test)["metrics"]
        single = evaluate_embeddings(
            Embeddings(train.features, torch.zeros(80, dtype=torch.long), train.path),
            Embeddings(test.features, sets, test.path),
        )["metrics"]
        for name in ("precision_at_1", "r_precision", "map_at_r"):
            assert as_classes[name] == pytest.approx(single[name]), name

    def test_table_lists_the_multilabel_metrics(self) -> None:
        table = format_table(evaluate_embeddings(_multi_hot(40, 3, 4, seed=22), _multi_hot(20, 3, 4, seed=23), k=5))
        assert all(description in table for description in MULTILABEL_METRICS.values())

    def test_refuses_class_labels_against_multi_hot_labels(self) -> None:
        with pytest.raises(EmbeddingsError, match=r"different kinds of labels: \(3,\) labels in .* vs class labels"):
            evaluate_embeddings(_multi_hot(10, 3, 4, seed=24), _clusters(10, 3, 4, seed=25))


def _far(n: int, dim: int, seed: int) -> Embeddings:
    """Out-of-distribution samples: clusters with centres of their own, overlapping the in-distribution ones."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, dim, generator=gen)
    features = centres[torch.randint(3, (n,), generator=gen)] + 1.2 * torch.randn(n, dim, generator=gen)
    return Embeddings(features, torch.full((n,), -1), Path("ood.pt"))


def _double(embeddings: Embeddings) -> Embeddings:
    return Embeddings(embeddings.features.double(), embeddings.labels, embeddings.path)


class TestOodScores:
    @pytest.mark.parametrize("k", [1, 10, 50])
    def test_equals_scikit_learn_on_the_kth_neighbour_distance(self, k: int) -> None:
        # float64 features are compared without rounding, so the scores equal scikit-learn's to 1e-12.
        train, test, ood = (_double(e) for e in (_clusters(300, 6, 8, seed=0), _clusters(90, 6, 8, 1), _far(70, 8, 2)))
        normalised = [
            e.features.numpy() / np.linalg.norm(e.features.numpy(), axis=1, keepdims=True) for e in (train, test, ood)
        ]
        neighbours = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(normalised[0])
        scores = np.concatenate([-neighbours.kneighbors(x)[0][:, -1] for x in normalised[1:]])
        truth = np.r_[np.ones(90), np.zeros(70)]
        fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=False)
        expected = {
            "ood_auroc": roc_auc_score(truth, scores),
            "ood_aupr_in": average_precision_score(truth, scores),
            "ood_aupr_out": average_precision_score(1 - truth, -scores),
            "ood_fpr95": fpr[np.argmax(tpr >= 0.95)],
        }
        ours = ood_scores(train, test, ood, k=k)
        assert 0.55 < ours["ood_auroc"] < 0.99  # neither chance nor perfect: the comparison can fail
        assert ours == pytest.approx(expected, abs=1e-12)

    def test_in_the_report_with_every_row(self) -> None:
        # The OOD score uses no labels: unknown (-1) training rows stay in its bank, the OOD file's labels are ignored.
        train, test, ood = _clusters(200, 5, 8, seed=3), _clusters(60, 5, 8, seed=4), _far(50, 8, 5)
        train.labels[:30] = -1
        report = evaluate_embeddings(train, test, k=20, ood=ood, ood_k=7)
        assert {name: report["metrics"][name] for name in OOD_METRICS} == ood_scores(train, test, ood, k=7)
        assert list(report["metrics"]) == [name for name in (*METRICS, *OOD_METRICS) if name in report["metrics"]]
        assert report["sizes"]["ood"] == 50 and report["sizes"]["train"] == 170 and report["settings"]["ood_k"] == 7
        known_rows = Embeddings(train.features[30:], train.labels[30:], train.path)
        assert ood_scores(known_rows, test, ood, k=7) != ood_scores(train, test, ood, k=7)  # control: rows matter
        table = format_table(report)
        assert all(description in table for description in OOD_METRICS.values())

    def test_without_ood_no_ood_metric(self) -> None:
        report = evaluate_embeddings(_clusters(60, 5, 4, seed=10), _clusters(30, 5, 4, seed=11))
        assert not set(OOD_METRICS) & set(report["metrics"]) and "ood" not in report["sizes"]

    def test_ood_k_beyond_the_bank_is_clamped(self) -> None:
        train, test, ood = _clusters(40, 3, 4, seed=8), _clusters(20, 3, 4, seed=9), _far(10, 4, 1)
        report = evaluate_embeddings(train, test, ood=ood, ood_k=500)
        assert report["settings"]["ood_k"] == 40
        assert {name: report["metrics"][name] for name in OOD_METRICS} == ood_scores(train, test, ood, k=40)

    def test_refuses_other_feature_sizes_and_a_bad_k(self) -> None:
        train, test = _clusters(40, 3, 4, seed=8), _clusters(20, 3, 4, seed=9)
        with pytest.raises(EmbeddingsError, match="training and out-of-distribution embeddings have different feature"):
            evaluate_embeddings(train, test, ood=_far(10, 6, 1))
        with pytest.raises(ValueError, match="`ood_k` to be a positive integer, but got 0"):
            evaluate_embeddings(train, test, ood=_far(10, 4, 1), ood_k=0)
