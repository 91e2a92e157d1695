"""The retrieval group's columns come from the task catalogue, read at call time."""

import numpy as np
import pytest

from vq_assets.core.model import tasks
from vq_assets.core.model.dataset import QualityDataset
from vq_assets.core.model.features import FULL_MODEL, groups_for
from vq_assets.core.model.retrieval import NEIGHBOURHOOD, prior_columns, prior_labels


def test_each_task_label_once_counts_on_log1p_rates_as_they_are():
    by_label = {p.label: p for p in prior_labels()}
    assert len(by_label) == len(prior_labels())
    for task in tasks.catalogue():
        if task.kind == "ordinal":  # its score's scale is per model: its counters instead
            assert task.label not in by_label
            assert {"plays", "likes", "comments", "shares"} <= set(by_label)
        else:
            assert by_label[task.label].log1p == (task.kind == "log1p")
    assert by_label["skip_rate"].column == "knn_skip_rate"
    assert by_label["plays"].column == "knn_log1p_plays"
    assert prior_columns()[-len(NEIGHBOURHOOD) :] == NEIGHBOURHOOD


def test_a_task_added_to_the_catalogue_reaches_the_prior(monkeypatch: pytest.MonkeyPatch):
    toy = tasks.Task(
        "day0", label="day0_plays", kind="log1p", stem="e_day0", prediction="p", unit=""
    )
    monkeypatch.setattr(tasks, "CATALOGUE", (*tasks.CATALOGUE, toy))
    assert "knn_log1p_day0_plays" in prior_columns()


def test_a_group_missing_on_every_training_row_is_left_out_of_the_model():
    # A world's first days: no label window had closed, so every training row's prior is
    # missing (zeros and the indicator); the later test rows have one.
    n = 10
    retrieval = np.zeros((n, 3), np.float32)
    retrieval[:, 1] = 1.0
    retrieval[8:] = [0.5, 0.0, 0.9]
    data = QualityDataset(
        {"creator": np.random.default_rng(0).normal(size=(n, 2)), "retrieval": retrieval}
    )
    train = np.arange(n) < 8
    assert groups_for(FULL_MODEL, data) == ("creator", "retrieval")
    assert groups_for(FULL_MODEL, data, train) == ("creator",)
    assert groups_for(FULL_MODEL, data, np.arange(n) < 9) == ("creator", "retrieval")
