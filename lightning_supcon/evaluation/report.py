"""The numbers of an offline evaluation: weighted kNN accuracy, retrieval, and how well k-means finds the classes.

- [0] Wu et al., Unsupervised Feature Learning via Non-Parametric Instance Discrimination, CVPR 2018,
  https://arxiv.org/abs/1805.01978 (Sec. 3.4, weighted kNN: the training set votes for each test sample)
- [1] Musgrave et al., A Metric Learning Reality Check, ECCV 2020, https://arxiv.org/abs/2003.08505 (Sec. 3.2,
  Precision@1, R-Precision, MAP@R: each test sample queries the other test samples)
- [2] Vinh et al., Information Theoretic Measures for Clusterings Comparison, JMLR 11, 2010 (NMI, AMI;
  scikit-learn's ``normalized_mutual_info_score`` and ``adjusted_mutual_info_score``)
- [3] Sun et al., Out-of-Distribution Detection with Deep Nearest Neighbors, ICML 2022, https://arxiv.org/abs/2204.06507
  (the distance to the ``k``-th nearest normalised training feature as the out-of-distribution score)

The kNN is the online monitor's own (:class:`~lightning_supcon.metrics.KNNAccuracy`, the same votes, ties and
top-5 rule as ``val/knn_top1``), the retrieval metrics are :func:`~lightning_supcon.metrics.retrieval_metrics`, and the
clusters are scikit-learn's ``KMeans`` on the L2-normalised test features with as many clusters as test classes.
Given out-of-distribution embeddings, the test samples (in-distribution, the positive class) and those are scored by
:class:`~lightning_supcon.metrics.KNNOODScore` [3] against the training bank: AUROC, AUPR-in/out and FPR95, exact.

Multi-hot labels ``(N, L)`` (a multi-label data set) get the online evaluation's multi-label kNN metrics instead
(:class:`~lightning_supcon.metrics.MultilabelKNN`: ``knn_map``, ``knn_f1``, ``knn_accuracy``, as ``val/knn_*``),
the retrieval metrics with each label set as a class, and no k-means scores (a sample with several labels is in no
single cluster of the truth).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_supcon.evaluation.embeddings import Embeddings, EmbeddingsError, check_pair
from lightning_supcon.metrics.knn import KNNAccuracy
from lightning_supcon.metrics.knn_multilabel import MultilabelKNN
from lightning_supcon.metrics.ood import KNNOODScore
from lightning_supcon.metrics.retrieval import retrieval_metrics
from lightning_supcon.models.labels import known
from lightning_supcon.utils.numerics import l2_normalize

#: Metric names of :func:`evaluate_embeddings`, in the order of the table, with what each one is.
METRICS: dict[str, str] = {
    "knn_top1": "weighted kNN top-1 (train bank -> test)",
    "knn_top5": "weighted kNN top-5 (train bank -> test)",
    "precision_at_1": "retrieval Precision@1 (test vs. test)",
    "r_precision": "retrieval R-Precision (test vs. test)",
    "map_at_r": "retrieval MAP@R (test vs. test)",
    "kmeans_nmi": "k-means NMI (test, k = test classes)",
    "kmeans_ami": "k-means AMI (test, k = test classes)",
}

#: Metric names of :func:`evaluate_embeddings` for multi-hot labels, in the order of the table.
MULTILABEL_METRICS: dict[str, str] = {
    "knn_map": "multi-label kNN mAP (train bank -> test)",
    "knn_f1": "multi-label kNN macro F1 at p >= 0.5",
    "knn_accuracy": "multi-label kNN label accuracy at p >= 0.5",
    "precision_at_1": "retrieval Precision@1 (test vs. test, label sets)",
    "r_precision": "retrieval R-Precision (test vs. test, label sets)",
    "map_at_r": "retrieval MAP@R (test vs. test, label sets)",
}

#: Metric names of :func:`evaluate_embeddings` given out-of-distribution embeddings, after :data:`METRICS` in the table.
OOD_METRICS: dict[str, str] = {
    "ood_auroc": "OOD AUROC (kNN distance, test vs. OOD)",
    "ood_aupr_in": "OOD AUPR-in (kNN distance, test vs. OOD)",
    "ood_aupr_out": "OOD AUPR-out (kNN distance, test vs. OOD)",
    "ood_fpr95": "OOD FPR at 95% TPR (kNN distance, lower is better)",
}


def known_samples(embeddings: Embeddings) -> Embeddings:
    """The samples of known class: rows labelled -1 (unknown, e.g. the unlabelled part of a semi-supervised run's
    training split) are left out, as the online kNN and probe leave them out.

    Raises:
        EmbeddingsError: If no sample has a known class.

    Example:
        >>> from pathlib import Path
        >>> kept = known_samples(Embeddings(torch.eye(3), torch.tensor([0, -1, 1]), Path("train.pt")))
        >>> kept.labels.tolist(), kept.features.shape
        ([0, 1], torch.Size([2, 3]))
    """
    keep = known(embeddings.labels)
    if not keep.any():
        raise EmbeddingsError(f"Expected samples of known class in {embeddings.path}, but every label is -1 (unknown).")
    return Embeddings(embeddings.features[keep], embeddings.labels[keep], embeddings.path, embeddings.class_names)


def knn_accuracy(train: Embeddings, test: Embeddings, k: int = 200, temperature: float = 0.07) -> dict[str, float]:
    """Weighted kNN top-1 (and top-5 with 5 or more classes) of the test samples against the training bank.

    Labels of any integer values are mapped to ``0..C-1`` over both splits; a test class absent from the training
    split can never be predicted. ``k`` larger than the bank is clamped to it.
    """
    classes, index = torch.unique(torch.cat([train.labels, test.labels]), return_inverse=True)
    bank_labels, query_labels = index[: len(train.labels)], index[len(train.labels) :]
    metric = KNNAccuracy(max(2, len(classes)), k=k, temperature=temperature)
    metric.update(l2_normalize(train.features, dim=1), bank_labels, bank=True)
    metric.update(l2_normalize(test.features, dim=1), query_labels, bank=False)
    return {f"knn_{name}": float(value) for name, value in metric.compute().items()}


def multilabel_knn_scores(
    train: Embeddings, test: Embeddings, k: int = 200, temperature: float = 0.07
) -> dict[str, float]:
    """mAP, macro F1 and label accuracy of the multi-label weighted kNN (the online ``val/knn_map``, ...) of the test
    samples' multi-hot labels ``(N, L)`` against the training bank; ``k`` larger than the bank is clamped to it.

    Example:
        >>> from pathlib import Path
        >>> train = Embeddings(torch.eye(2).repeat(3, 1), torch.tensor([[1, 0], [0, 1]]).repeat(3, 1), Path("t.pt"))
        >>> test = Embeddings(torch.eye(2) + 0.1, torch.tensor([[1, 0], [0, 1]]), Path("v.pt"))
        >>> multilabel_knn_scores(train, test, k=3)
        {'knn_accuracy': 1.0, 'knn_f1': 1.0, 'knn_map': 1.0}
    """
    metric = MultilabelKNN(train.labels.shape[1], k=k, temperature=temperature)
    metric.update(l2_normalize(train.features, dim=1), train.labels, bank=True)
    metric.update(l2_normalize(test.features, dim=1), test.labels, bank=False)
    return {f"knn_{name}": float(value) for name, value in metric.compute().items()}


def ood_scores(train: Embeddings, test: Embeddings, ood: Embeddings, k: int = 50) -> dict[str, float]:
    """AUROC, AUPR-in, AUPR-out and FPR95 of the ``k``-th nearest neighbour distance to the training bank [3], the
    test samples in-distribution (positive), the ``ood`` samples out-of-distribution; no labels are used.

    Example:
        >>> from pathlib import Path
        >>> train = Embeddings(torch.eye(3)[:2].repeat(4, 1), torch.zeros(8, dtype=torch.long), Path("train.pt"))
        >>> test = Embeddings(torch.eye(3)[:2] + 0.1, torch.zeros(2, dtype=torch.long), Path("val.pt"))
        >>> ood = Embeddings(torch.eye(3)[2:] + 0.1, torch.zeros(1, dtype=torch.long), Path("ood.pt"))
        >>> ood_scores(train, test, ood, k=2)
        {'ood_auroc': 1.0, 'ood_aupr_in': 1.0, 'ood_aupr_out': 1.0, 'ood_fpr95': 0.0}
    """
    metric = KNNOODScore(k=k)
    metric.update(train.features, bank=True)
    metric.update(test.features, torch.zeros(len(test.features), dtype=torch.bool))
    metric.update(ood.features, torch.ones(len(ood.features), dtype=torch.bool))
    return {f"ood_{name}": float(value) for name, value in metric.compute().items()}


def kmeans_scores(features: Tensor, labels: Tensor, seed: int = 0) -> dict[str, float]:
    """NMI and AMI between the classes and ``KMeans`` clusters (one per class, ``n_init=10``) of the L2-normalised
    ``features`` ``(N, D)``; NaN for fewer than 2 classes."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    truth = labels.numpy()
    num_classes = len(torch.unique(labels))
    if num_classes < 2 or num_classes > len(truth) - 1:
        return {"kmeans_nmi": float("nan"), "kmeans_ami": float("nan")}
    data = l2_normalize(features.double(), dim=1).numpy()
    clusters = KMeans(n_clusters=num_classes, n_init=10, random_state=seed).fit_predict(data)
    return {
        "kmeans_nmi": float(normalized_mutual_info_score(truth, clusters)),
        "kmeans_ami": float(adjusted_mutual_info_score(truth, clusters)),
    }


def evaluate_embeddings(
    train: Embeddings,
    test: Embeddings,
    k: int = 200,
    temperature: float = 0.07,
    seed: int = 0,
    ood: Embeddings | None = None,
    ood_k: int = 50,
) -> dict[str, Any]:
    """Every metric of :data:`METRICS` for one training and one test split of the same model's embeddings, and of
    :data:`OOD_METRICS` given out-of-distribution embeddings.

    Args:
        train: The kNN bank (usually ``predict`` on the training split).
        test: The samples to evaluate (``predict`` on the validation or test split).
        k: Neighbours of the weighted kNN (the online monitor's default: 200).
        temperature: Temperature of the kNN vote weights ``exp(similarity / T)``.
        seed: Random state of k-means.
        ood: Out-of-distribution embeddings of the same model: adds the :data:`OOD_METRICS` (:func:`ood_scores`).
        ood_k: Which neighbour's distance scores a sample ([3]'s default for CIFAR-10: 50).

    Returns:
        ``{"metrics": {name: fraction in [0, 1]}, "sizes": {...}, "settings": {...}}``, plain data for JSON, with
        ``"class_names"`` (the name of each class index) when the files have them; with multi-hot labels the metrics
        of :data:`MULTILABEL_METRICS` and ``sizes["labels"]`` (not ``"classes"``).
        ``knn_top5`` is left out with fewer than 5 classes; retrieval metrics are NaN when no test class has two
        samples. Samples labelled -1 (unknown class) are left out of every class metric (:func:`known_samples`);
        their counts are ``sizes["unknown_train"]`` and ``sizes["unknown_test"]`` when there are any. The OOD
        metrics need no labels and use every row of the three files (``sizes["ood"]``, ``settings["ood_k"]``).

    Raises:
        EmbeddingsError: If the two splits (or the training and OOD embeddings) cannot be compared
            (:func:`~lightning_supcon.evaluation.check_pair`), or a split has no sample of known class.

    Example:
        >>> from pathlib import Path
        >>> train = Embeddings(torch.eye(4).repeat(5, 1), torch.arange(4).repeat(5), Path("train.pt"))
        >>> test = Embeddings(torch.eye(4) + 0.1, torch.arange(4), Path("val.pt"))
        >>> report = evaluate_embeddings(train, test, k=5)
        >>> report["metrics"]["knn_top1"], report["sizes"]
        (1.0, {'train': 20, 'test': 4, 'dim': 4, 'classes': 4})
    """
    check_pair(train, test)
    ood_metrics: dict[str, float] = {}
    ood_sizes: dict[str, int] = {}
    ood_settings: dict[str, int] = {}
    if ood is not None:  # before the unknown rows are left out: the OOD score uses no label
        check_pair(train, ood, name="out-of-distribution")
        if ood_k < 1:
            raise ValueError(f"Expected `ood_k` to be a positive integer, but got {ood_k}")
        ood_metrics = ood_scores(train, test, ood, ood_k)
        ood_sizes, ood_settings = {"ood": len(ood.labels)}, {"ood_k": min(ood_k, len(train.labels))}
    unknown = {"unknown_train": int((~known(train.labels)).sum()), "unknown_test": int((~known(test.labels)).sum())}
    train, test = known_samples(train), known_samples(test)
    if test.multilabel:
        metrics = multilabel_knn_scores(train, test, k, temperature)
        metric_names = MULTILABEL_METRICS
        kind = {"labels": int(test.labels.shape[1])}
    else:
        metrics = knn_accuracy(train, test, k, temperature)
        metrics |= kmeans_scores(test.features, test.labels, seed)
        metric_names = METRICS
        kind = {"classes": len(torch.unique(torch.cat([train.labels, test.labels])))}
    metrics |= {name: float(value) for name, value in retrieval_metrics(test.features, test.labels).items()}
    sizes = {
        "train": len(train.labels),
        "test": len(test.labels),
        "dim": int(test.features.shape[1]),
        **kind,
        **{name: count for name, count in unknown.items() if count},  # the left-out rows, when there are any
        **ood_sizes,
    }
    names = test.class_names or train.class_names
    return {
        "metrics": {name: metrics[name] for name in metric_names if name in metrics} | ood_metrics,
        **({"class_names": list(names)} if names else {}),
        "sizes": sizes,
        "settings": {"k": min(k, len(train.labels)), "temperature": temperature, "seed": seed, **ood_settings},
    }


def format_table(report: dict[str, Any]) -> str:
    """A markdown table of the report's metrics, in percent, and the classes by name when the report has them.

    Example:
        >>> print(format_table({"metrics": {"knn_top1": 0.5}}))
        | metric                                  | value (%) |
        |-----------------------------------------|-----------|
        | weighted kNN top-1 (train bank -> test) |     50.00 |
    """
    multilabel = "labels" in report.get("sizes", {})  # a report of multi-hot labels
    descriptions = (MULTILABEL_METRICS if multilabel else METRICS) | OOD_METRICS
    rows = [(descriptions.get(name, name), f"{100 * value:.2f}") for name, value in report["metrics"].items()]
    width = max([len("metric"), *(len(name) for name, _ in rows)]) + 1
    lines = [f"| {'metric':<{width}}| value (%) |", f"|{'-' * (width + 1)}|-----------|"]
    lines += [f"| {name:<{width}}| {value:>9} |" for name, value in rows]
    names = report.get("class_names")
    if names:
        shown = ", ".join(f"{i}: {name}" for i, name in enumerate(names[:20]))
        lines.append(f"\nclasses ({len(names)}): {shown}{', ...' if len(names) > 20 else ''}")
    return "\n".join(lines)
