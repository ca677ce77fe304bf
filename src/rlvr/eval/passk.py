"""The unbiased pass@k estimator (Chen et al., 2021, "Evaluating Large Language Models Trained on Code").

With ``n`` samples of which ``c`` pass, the probability that at least one of ``k`` samples drawn without
replacement passes is ``1 - C(n-c, k) / C(n, k)``. The binomials overflow floats for moderate ``n``, so the
ratio is computed as the product ``prod_{i=n-c+1..n} (1 - k / i)``, which stays in [0, 1] throughout.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k for one problem from ``n`` samples with ``c`` correct.

    Raises:
        ValueError: when ``k < 1``, ``n < k`` or ``c`` is outside ``[0, n]``.
    """
    if k < 1 or n < k:
        raise ValueError(f"pass@k needs 1 <= k <= n samples, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"correct count c={c} outside [0, n={n}]")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given ``(n, c)`` per problem; problems with fewer than ``k`` samples are
    skipped (their estimate is undefined). ``nan`` when no problem qualifies."""
    values = [pass_at_k(n, c, k) for n, c in counts if n >= k]
    return sum(values) / len(values) if values else float("nan")


def ks_for(n_samples: int, wanted: Iterable[int] = (1, 5, 10, 100)) -> list[int]:
    """The standard ``k`` values that ``n_samples`` samples per problem can estimate (always includes 1)."""
    ks = sorted({k for k in wanted if k <= n_samples} | {1})
    if n_samples > 1 and n_samples not in ks and n_samples < max(wanted):
        ks.append(n_samples)
    return ks
