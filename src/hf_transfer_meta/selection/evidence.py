"""LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning").

How well do a model's frozen features explain the labels? For each class c, the one-vs-rest target
``y_c = [label == c]`` is fit by Bayesian linear regression ``y = F w + noise`` with prior ``w ~ N(0, 1/alpha I)``
and noise ``N(0, 1/beta)``; alpha and beta are chosen to maximise the marginal likelihood (the evidence)
``p(y_c | F, alpha, beta)`` by MacKay's fixed-point updates, and LogME is that maximum log evidence divided by the
number of examples, averaged over the classes (a class the features do not explain at all gets the limit
alpha = inf, w = 0). Higher is better; the value has no meaning across data sets, only
across models on one data set. Nothing is trained, so a candidate is scored in the time of one pass over the data.

With ``F = U diag(s) V^T`` (thin SVD, ``sigma = s^2``) and ``z = U^T y``, everything is a sum over the singular
values, for N examples of D features:

    A = alpha I + beta F^T F,   m = beta A^-1 F^T y
    log p(y) = D/2 log alpha + N/2 log beta - 1/2 log|A| - beta/2 |y - F m|^2 - alpha/2 |m|^2 - N/2 log 2 pi
    gamma = sum sigma_i beta / (alpha + beta sigma_i);   alpha <- gamma / |m|^2;   beta <- (N - gamma) / |y - F m|^2
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LogMEResult", "logme", "log_evidence"]

_TINY = 1e-12


@dataclass
class LogMEResult:
    """``score``: the mean over classes of the maximum log evidence per example; per class: alpha, beta, evidence."""

    score: float
    alphas: list[float]
    betas: list[float]
    evidences: list[float]
    iterations: list[int]

    def to_dict(self) -> dict:
        return {
            "score": self.score,
            "alphas": self.alphas,
            "betas": self.betas,
            "evidences": self.evidences,
            "iterations": self.iterations,
        }


def log_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The log evidence per example of ``y`` under the model above at given alpha and beta, computed directly
    (D x D matrices, no SVD): the definition the fixed point is checked against."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    residual = float(((y - f @ m) ** 2).sum())
    _, logdet = np.linalg.slogdet(a)
    value = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - logdet / 2
        - beta / 2 * residual
        - alpha / 2 * float(m @ m)
        - n / 2 * np.log(2 * np.pi)
    )
    return float(value / n)


def _maximise(sigma: np.ndarray, z: np.ndarray, y_sq: float, n: int, d: int, tol: float, max_iter: int):
    """MacKay's fixed point for one target; ``z = U^T y`` over the k non-zero singular values."""
    z2 = z**2
    outside = max(y_sq - float(z2.sum()), 0.0)  # the part of |y|^2 outside the span of F: always residual
    alpha, beta, iteration = 1.0, 1.0, 0
    while iteration < max_iter:
        iteration += 1
        t = alpha / beta
        gamma = float((sigma / (sigma + t)).sum())
        m_sq = float((sigma * z2 / (sigma + t) ** 2).sum())
        residual = float((z2 * (t / (sigma + t)) ** 2).sum()) + outside
        # Bounded: alpha -> inf (no signal in the features) or beta -> inf (a perfect fit) are limits, not values.
        alpha = min(max(gamma / max(m_sq, _TINY), _TINY), 1 / _TINY)
        beta = min(max((n - gamma) / max(residual, _TINY), _TINY), 1 / _TINY)
        if abs(alpha / beta - t) <= tol * t:
            break
    t = alpha / beta
    m_sq = float((sigma * z2 / (sigma + t) ** 2).sum())
    residual = float((z2 * (t / (sigma + t)) ** 2).sum()) + outside
    evidence = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - 0.5 * float(np.log(alpha + beta * sigma).sum())
        - (d - len(sigma)) / 2 * np.log(alpha)  # zero singular values: log(alpha + 0) each, part of log|A|
        - beta / 2 * residual
        - alpha / 2 * m_sq
        - n / 2 * np.log(2 * np.pi)
    )
    evidence = float(evidence / n)
    # alpha -> inf is the "features explain nothing" limit (w = 0, all of y is noise): the fixed point creeps towards
    # it without reaching it, so its evidence is compared in closed form.
    beta_inf = n / max(y_sq, _TINY)
    no_signal = float((n / 2 * np.log(beta_inf) - n / 2 - n / 2 * np.log(2 * np.pi)) / n)
    if no_signal > evidence:
        return no_signal, float("inf"), float(beta_inf), iteration
    return evidence, float(alpha), float(beta), iteration


def logme(
    features: np.ndarray, labels: np.ndarray, *, regression: bool = False, tol: float = 1e-8, max_iter: int = 1000
) -> LogMEResult:
    """LogME of ``features`` ``(n, d)`` for integer class ``labels`` ``(n,)`` (or real targets ``(n,)`` / ``(n, t)``
    with ``regression=True``). The fixed point is iterated to a relative change of ``tol`` in alpha/beta (the
    reference code stops after 11 steps or 1e-3). With fewer examples than features the zero eigenvalues of
    ``F^T F`` still count in ``log|A|`` (the reference code leaves them out, which adds ``(d - n)/2 log alpha / n``)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be a 2-d array (n >= 2 examples, d features); got shape {f.shape}.")
    n, d = f.shape
    labels = np.asarray(labels)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} feature rows.")
    if regression:
        targets = labels.astype(np.float64).reshape(n, -1)
    else:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"Class labels must be integers (got {labels.dtype}); pass regression=True for targets.")
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError(
                f"LogME of a classification needs at least 2 classes; the labels hold {classes.tolist()}."
            )
        targets = np.stack([(labels == c).astype(np.float64) for c in classes], axis=1)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max() * max(n, d) * np.finfo(np.float64).eps
    u, sigma = u[:, keep], s[keep] ** 2
    results = [_maximise(sigma, u.T @ y, float(y @ y), n, d, tol, max_iter) for y in targets.T]
    evidences, alphas, betas, iterations = (list(v) for v in zip(*results, strict=True))
    return LogMEResult(float(np.mean(evidences)), alphas, betas, evidences, iterations)
