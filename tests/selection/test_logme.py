"""LogME against its definition: the fixed point's evidence equals the directly computed log evidence at the same
(alpha, beta), no (alpha, beta) on a fine grid has higher evidence, and features that separate the classes score
higher than features that do not."""

import numpy as np
import pytest

from hf_transfer_meta.selection import log_evidence, logme


def _data(n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    features = rng.normal(size=(n, d))
    features[:, 0] += 2.0 * labels  # one informative direction
    return features, labels


def test_fixed_point_equals_the_direct_evidence_and_is_the_grid_maximum():
    features, labels = _data()
    result = logme(features, labels)
    assert sum(a == float("inf") for a in result.alphas) == 1  # class 0 (no shift of feature 0): the limit
    for c, (alpha, beta, evidence) in enumerate(zip(result.alphas, result.betas, result.evidences, strict=True)):
        y = (labels == c).astype(float)
        if alpha == float("inf"):  # the no-signal limit: w = 0, beta = n / |y|^2
            n = len(y)
            assert beta == pytest.approx(n / (y @ y))
            assert evidence == pytest.approx(0.5 * np.log(beta) - 0.5 - 0.5 * np.log(2 * np.pi))
            assert log_evidence(features, y, 1e9, beta) == pytest.approx(evidence, abs=1e-6)
            continue
        assert evidence == pytest.approx(log_evidence(features, y, alpha, beta), abs=1e-10)
        grid = [
            log_evidence(features, y, alpha * fa, beta * fb)
            for fa in np.geomspace(0.2, 5, 15)
            for fb in np.geomspace(0.2, 5, 15)
        ]
        assert max(grid) <= evidence + 1e-9  # the grid holds (alpha, beta) itself: the maximum is attained there
    assert result.score == pytest.approx(np.mean(result.evidences))


def test_a_hand_computed_one_feature_example():
    """N=4, D=1, F = [1, 2, 3, 4]^T, y = [0, 0, 1, 1]: the evidence at the fixed point, by the scalar formulas."""
    f = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    result = logme(f, np.array([0, 0, 1, 1]))
    alpha, beta = result.alphas[1], result.betas[1]
    a = alpha + beta * 30.0  # F^T F = 30
    m = beta * 7.0 / a  # F^T y = 7
    residual = float(((y - f[:, 0] * m) ** 2).sum())
    gamma = beta * 30.0 / a
    assert alpha == pytest.approx(gamma / m**2, rel=1e-6) and beta == pytest.approx((4 - gamma) / residual, rel=1e-6)
    hand = (0.5 * np.log(alpha) + 2 * np.log(beta) - 0.5 * np.log(a) - beta / 2 * residual - alpha / 2 * m**2
            - 2 * np.log(2 * np.pi)) / 4  # fmt: skip
    assert result.evidences[1] == pytest.approx(hand, abs=1e-10)


def test_more_features_than_examples_counts_every_eigenvalue():
    features, labels = _data(n=12, d=30, seed=1)
    result = logme(features, labels)
    for c, (alpha, beta, evidence) in enumerate(zip(result.alphas, result.betas, result.evidences, strict=True)):
        assert evidence == pytest.approx(log_evidence(features, (labels == c).astype(float), alpha, beta), abs=1e-9)


def test_informative_features_score_higher():
    features, labels = _data(n=200, d=8, seed=2)
    noise = np.random.default_rng(3).normal(size=features.shape)
    assert logme(features, labels).score > logme(noise, labels).score + 0.05


def test_regression_targets_and_bad_input():
    features, labels = _data()
    targets = features[:, :1] * 3.0 + 0.1 * np.random.default_rng(4).normal(size=(60, 1))
    assert (
        logme(features, targets, regression=True).score > logme(features, labels.astype(float), regression=True).score
    )
    with pytest.raises(ValueError, match="at least 2 classes"):
        logme(features, np.zeros(60, dtype=int))
    with pytest.raises(ValueError, match="integers"):
        logme(features, labels.astype(float))
    with pytest.raises(ValueError, match="59 labels for 60"):
        logme(features, labels[:59])
