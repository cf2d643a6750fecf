import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.splits import grouped_splits


def _cohort(n_patients=30, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_patients), rng.integers(1, 5, n_patients))
    y = (rng.random(groups.size) < 0.6).astype(int)
    return y, groups


def test_no_patient_on_both_sides_and_both_classes():
    y, g = _cohort()
    splits = grouped_splits(y, g, n_trials=20, test_size=0.2, seed=1)
    assert len(splits) == 20
    for s in splits:
        assert not set(g[s.train]) & set(g[s.test])
        assert set(y[s.train]) == {0, 1} and set(y[s.test]) == {0, 1}
        assert len(s.train) + len(s.test) == len(y)
        assert 0.1 < len(s.test) / len(y) < 0.35
    # trials differ, the same seed reproduces them
    assert len({tuple(s.test) for s in splits}) > 10
    again = grouped_splits(y, g, n_trials=20, test_size=0.2, seed=1)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(splits, again, strict=True))


def test_stratification_keeps_balance_on_average():
    y, g = _cohort(60, seed=2)
    splits = grouped_splits(y, g, n_trials=30, seed=3)
    share = np.mean([y[s.test].mean() for s in splits])
    assert abs(share - y.mean()) < 0.08


@pytest.mark.parametrize(
    ("y", "g", "match"),
    [
        ([1, 1, 1, 0, 1, 1], [0, 1, 2, 3, 4, 5], "fewer than two lesions"),
        ([1, 0, 1, 0], [0, 1, 2, 3], "too few"),
    ],
)
def test_bad_cohorts(y, g, match):
    with pytest.raises(InputError, match=match):
        grouped_splits(y, g, n_trials=2)


def test_test_parts_cover_the_cohort_evenly():
    # 39 patients with 1-4 lesions each, as the PULSAR-sized cohort: over 20 trials of 20 % test parts no lesion
    # is tested in most trials and few are never tested (the first fold of StratifiedGroupKFold alone kept the
    # same patients: on the default simulated cohort 4 lesions were in every test part and 14 in none)
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 5, 39)
    groups = np.repeat(np.arange(39), sizes)
    y = rng.integers(0, 2, len(groups))
    count = np.zeros(len(y), int)
    for s in grouped_splits(y, groups, n_trials=20, seed=0):
        count[s.test] += 1
    assert count.max() <= 10 and np.mean(count == 0) < 0.1
    assert abs(count.mean() - 20 * 0.2) < 1.0
