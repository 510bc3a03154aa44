"""airlab.analysis.stats checked against scipy (to 1e-9) and hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special
from scipy import stats as st

from airlab.analysis import stats as S

CASES = range(50)  # fixed seeds: deterministic "property" cases without hypothesis


def close(x: float, y: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    return math.isclose(float(x), float(y), rel_tol=rel, abs_tol=abs_)


def sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two samples of different sizes, locations and spreads (seed counts like the lab's)."""
    rng = np.random.default_rng(seed)
    na, nb = rng.integers(2, 16, size=2)
    a = rng.normal(rng.normal(0, 2), rng.uniform(0.1, 3), size=na)
    b = rng.normal(rng.normal(0, 2), rng.uniform(0.1, 3), size=nb)
    return a, b


def paired_sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(10_000 + seed)
    n = int(rng.integers(2, 16))
    a = rng.normal(1.0, 0.5, size=n)
    b = a + rng.normal(rng.normal(0, 0.3), rng.uniform(0.05, 1), size=n)
    return a, b


# --------------------------------------------------------------------------- summarize


def test_summarize_matches_numpy_and_scipy() -> None:
    for seed in CASES:
        check_summarize(seed)


def check_summarize(seed: int) -> None:
    x, _ = sample(seed)
    s = S.summarize(x.tolist())
    n = x.size
    assert s.n == n
    assert close(s.mean, np.mean(x))
    assert close(s.sd, np.std(x, ddof=1))
    assert close(s.sem, st.sem(x))
    lo, hi = st.t.interval(0.95, n - 1, loc=np.mean(x), scale=st.sem(x))
    assert close(s.ci_low, lo) and close(s.ci_high, hi)
    assert s.min == x.min() and s.max == x.max()


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.95, 0.99])
def test_t_interval_matches_scipy(confidence: float) -> None:
    for seed in range(10):
        x, _ = sample(seed)
        lo, hi = S.t_interval(x, confidence)
        ref = st.t.interval(confidence, x.size - 1, loc=np.mean(x), scale=st.sem(x))
        assert close(lo, ref[0]) and close(hi, ref[1])


def test_t_interval_rejects_bad_confidence() -> None:
    with pytest.raises(ValueError, match="confidence"):
        S.t_interval([1.0, 2.0], 95)


def test_summarize_small_and_constant_samples() -> None:
    empty = S.summarize([])
    assert empty.n == 0 and all(math.isnan(v) for v in (empty.mean, empty.sd, empty.min))
    one = S.summarize([3.5])
    assert one.n == 1 and one.mean == 3.5 and one.min == one.max == 3.5
    assert all(math.isnan(v) for v in (one.sd, one.sem, one.ci_low, one.ci_high))
    assert S.t_interval([3.5]) == pytest.approx((math.nan, math.nan), nan_ok=True)
    const = S.summarize([0.1] * 7)  # np.var of these is ~1e-35, not 0
    assert const.sd == 0.0 and const.sem == 0.0 and const.mean == 0.1
    assert const.ci_low == const.ci_high == 0.1


def test_summarize_drops_nan_failed_runs() -> None:
    s = S.summarize([1.0, float("nan"), 3.0, float("nan")])
    assert s.n == 2 and s.mean == 2.0 and close(s.sd, math.sqrt(2.0))


# --------------------------------------------------------------------------- t tests


def welch_df(a: np.ndarray, b: np.ndarray) -> float:
    """Welch-Satterthwaite degrees of freedom, written out."""
    va, vb = np.var(a, ddof=1) / a.size, np.var(b, ddof=1) / b.size
    return (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))


def test_welch_matches_scipy() -> None:
    for seed in CASES:
        check_welch(seed)


def check_welch(seed: int) -> None:
    a, b = sample(seed)
    r = S.welch_t(a.tolist(), b.tolist())
    ref = st.ttest_ind(b, a, equal_var=False)  # b - a, our sign convention
    assert close(r.statistic, ref.statistic)
    assert close(r.p_value, ref.pvalue)
    assert close(r.df, ref.df) and close(r.df, welch_df(a, b))
    assert close(r.mean_diff, np.mean(b) - np.mean(a))
    ci = ref.confidence_interval(0.95)
    assert close(r.ci_low, ci.low) and close(r.ci_high, ci.high)
    # The sign convention is symmetric: swapping the arms flips the statistic only.
    swapped = S.welch_t(b, a)
    assert close(swapped.statistic, -r.statistic) and close(swapped.p_value, r.p_value)


def test_paired_matches_scipy() -> None:
    for seed in CASES:
        check_paired(seed)


def check_paired(seed: int) -> None:
    a, b = paired_sample(seed)
    r = S.paired_t(a, b)
    ref = st.ttest_rel(b, a)
    assert close(r.statistic, ref.statistic)
    assert close(r.p_value, ref.pvalue)
    assert r.df == a.size - 1
    assert close(r.mean_diff, np.mean(b - a))
    ci = ref.confidence_interval(0.95)
    assert close(r.ci_low, ci.low) and close(r.ci_high, ci.high)


def test_paired_rejects_unequal_lengths_naming_them() -> None:
    with pytest.raises(ValueError, match=r"len\(a\)=3 and len\(b\)=2"):
        S.paired_t([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="3.*2"):
        S.paired_cohens_dz([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy, on [1, 1, 1]
def test_welch_degenerate_zero_variance() -> None:
    same = S.welch_t([0.1] * 5, [0.1] * 3)
    assert same.statistic == 0.0 and same.p_value == 1.0 and same.mean_diff == 0.0
    assert same.ci_low == same.ci_high == 0.0 and math.isnan(same.df)
    up = S.welch_t([1.0, 1.0, 1.0], [2.0, 2.0])
    assert up.statistic == math.inf and up.p_value == 0.0 and up.mean_diff == 1.0
    assert up.ci_low == up.ci_high == 1.0
    down = S.welch_t([2.0, 2.0], [1.0, 1.0, 1.0])
    assert down.statistic == -math.inf and down.p_value == 0.0
    # Only one group constant is an ordinary Welch test (df = n_other - 1); scipy agrees.
    one = S.welch_t([1.0, 1.0, 1.0], [1.0, 2.0, 4.0])
    ref = st.ttest_ind([1.0, 2.0, 4.0], [1.0, 1.0, 1.0], equal_var=False)
    assert close(one.p_value, ref.pvalue) and close(one.df, 2.0)


def test_welch_degenerate_too_few_values() -> None:
    for a, b in (([1.0], [1.0, 2.0]), ([1.0, 2.0], [5.0]), ([], []), ([1.0, 2.0], [])):
        r = S.welch_t(a, b)
        assert math.isnan(r.p_value) and math.isnan(r.statistic) and math.isnan(r.ci_low)
    assert S.welch_t([1.0], [1.0, 2.0]).mean_diff == 0.5  # still defined with one value


def test_paired_degenerate() -> None:
    same = S.paired_t([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.statistic == 0.0 and same.p_value == 1.0 and same.df == 2.0
    shift = S.paired_t([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert shift.statistic == -math.inf and shift.p_value == 0.0
    assert shift.ci_low == shift.ci_high == -0.5
    one = S.paired_t([1.0], [2.0])
    assert math.isnan(one.p_value) and one.mean_diff == 1.0
    assert math.isnan(S.paired_t([], []).p_value)


def test_nan_runs_are_dropped() -> None:
    nan = float("nan")
    a, b = [1.0, 2.0, nan, 4.0], [2.5, nan, 3.0, 4.5, 6.0]
    clean_a, clean_b = [1.0, 2.0, 4.0], [2.5, 3.0, 4.5, 6.0]
    assert S.welch_t(a, b) == S.welch_t(clean_a, clean_b)
    assert S.cohens_d(a, b) == S.cohens_d(clean_a, clean_b)
    # Paired: a NaN on either side drops the whole pair.
    pa, pb = [1.0, 2.0, nan, 4.0, 5.0], [1.5, nan, 3.0, 4.2, 6.0]
    r = S.paired_t(pa, pb)
    ref = st.ttest_rel([1.5, 4.2, 6.0], [1.0, 4.0, 5.0])
    assert r.df == 2 and close(r.statistic, ref.statistic) and close(r.p_value, ref.pvalue)
    assert S.paired_cohens_dz(pa, pb) == S.paired_cohens_dz([1.0, 4.0, 5.0], [1.5, 4.2, 6.0])


# --------------------------------------------------------------------------- effect sizes


def test_cohens_d_hand_computed() -> None:
    # means 2 and 5, both variances 1, pooled sd 1
    assert S.cohens_d([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == 3.0
    assert S.cohens_d([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]) == -3.0
    # a: mean 2, var 2 (n=2); b: mean 5, var 20/3 (n=4); pooled var (1*2 + 3*20/3) / 4 = 5.5
    assert close(S.cohens_d([1.0, 3.0], [2.0, 4.0, 6.0, 8.0]), 3.0 / math.sqrt(5.5))


def test_cohens_d_and_dz_against_formulae() -> None:
    for seed in CASES:
        check_effect_sizes(seed)


def check_effect_sizes(seed: int) -> None:
    a, b = sample(seed)
    na, nb = a.size, b.size
    pooled = ((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2)
    d = (b.mean() - a.mean()) / math.sqrt(pooled)
    assert close(S.cohens_d(a, b), d)
    # Pooled-variance d is the Student t statistic rescaled: t = d / sqrt(1/na + 1/nb).
    t_student = st.ttest_ind(b, a, equal_var=True).statistic
    assert close(S.cohens_d(a, b), t_student * math.sqrt(1 / na + 1 / nb))
    pa, pb = paired_sample(seed)
    diff = pb - pa
    assert close(S.paired_cohens_dz(pa, pb), diff.mean() / np.std(diff, ddof=1))
    assert close(S.paired_cohens_dz(pa, pb), st.ttest_rel(pb, pa).statistic / math.sqrt(pa.size))


def test_hedges_correction_exact_gamma() -> None:
    for df in (2, 3, 4, 7, 10, 30, 100):
        exact = special.gamma(df / 2) / (math.sqrt(df / 2) * special.gamma((df - 1) / 2))
        assert close(S.hedges_correction(df), exact)
    assert close(S.hedges_correction(2), 1 / math.sqrt(math.pi))
    # gammaln keeps it finite where gamma() itself overflows (df > ~343).
    big = S.hedges_correction(5000)
    assert math.isfinite(big) and abs(big - (1 - 3 / (4 * 5000 - 1))) < 1e-8
    assert math.isnan(S.hedges_correction(1))


def test_hedges_g_matches_small_sample_approximation() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 11), rng.normal(0.8, 1, 11)  # df = 20
    d, g = S.cohens_d(a, b), S.hedges_g(a, b)
    df = 20
    assert abs(g - d * (1 - 3 / (4 * df - 1))) < 1e-3
    assert close(g, d * S.hedges_correction(df))
    assert abs(g) < abs(d)  # the correction shrinks toward zero


def test_effect_sizes_zero_spread_and_too_few() -> None:
    assert S.cohens_d([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.0
    assert S.hedges_g([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.0
    assert S.cohens_d([1.0, 1.0], [2.0, 2.0]) == math.inf
    assert S.hedges_g([2.0, 2.0], [1.0, 1.0]) == -math.inf
    assert S.paired_cohens_dz([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert S.paired_cohens_dz([1.0, 2.0], [0.0, 1.0]) == -math.inf
    assert math.isnan(S.cohens_d([1.0], [1.0, 2.0]))
    assert math.isnan(S.hedges_g([1.0], [1.0, 2.0]))
    assert math.isnan(S.paired_cohens_dz([1.0], [2.0]))


# --------------------------------------------------------------------------- Holm


def holm_reference(p: list[float]) -> list[float]:
    """Brute force from the definition: adj(i) = max over j with p_j <= p_i of min(1, k_j p_j),
    where k_j = m - rank(j) and rank counts the non-NaN p-values strictly before j in the
    sorted order (ties broken by position; tied p-values end up with equal adjustments)."""
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    m = len(idx)
    ranked = sorted(idx, key=lambda i: (p[i], i))
    rank = {i: r for r, i in enumerate(ranked)}
    out = []
    for i, v in enumerate(p):
        if math.isnan(v):
            out.append(math.nan)
            continue
        out.append(max(min(1.0, (m - rank[j]) * p[j]) for j in idx if rank[j] <= rank[i]))
    return out


def test_holm_known_example() -> None:
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)


def test_holm_matches_brute_force() -> None:
    for seed in CASES:
        check_holm(seed)


def check_holm(seed: int) -> None:
    rng = np.random.default_rng(20_000 + seed)
    m = int(rng.integers(1, 12))
    p = (rng.uniform(0, 1, m) ** 3).tolist()  # skewed toward small p, where Holm matters
    if m > 2:
        p[int(rng.integers(m))] = p[0]  # a tie
        p[int(rng.integers(m))] = math.nan  # a test that could not run
    got, ref = S.holm(p), holm_reference(p)
    assert got == pytest.approx(ref, rel=1e-12, nan_ok=True)
    assert [math.isnan(v) for v in got] == [math.isnan(v) for v in p]
    # monotone in the raw p-values, never below them, never above 1
    pairs = sorted((v, a) for v, a in zip(p, got, strict=True) if not math.isnan(v))
    assert all(a1 <= a2 for (_, a1), (_, a2) in zip(pairs, pairs[1:], strict=False))
    assert all(v <= a <= 1.0 for v, a in pairs)


def test_holm_against_statsmodels_when_available() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.uniform(0, 1, int(rng.integers(1, 12))) ** 2
        ref = multitest.multipletests(p, method="holm")[1]
        assert S.holm(p.tolist()) == pytest.approx(ref.tolist(), rel=1e-12)


def test_holm_edge_cases() -> None:
    assert S.holm([]) == []
    assert S.holm([0.5, 0.9]) == [1.0, 1.0]  # clipped
    nan_only = S.holm([math.nan])
    assert len(nan_only) == 1 and math.isnan(nan_only[0])
    # NaNs are not counted in m: two real tests, so the smaller one is doubled
    assert S.holm([0.01, math.nan, 0.2]) == pytest.approx([0.02, math.nan, 0.2], nan_ok=True)
    with pytest.raises(ValueError, match="p-values"):
        S.holm([0.1, 1.5])


# --------------------------------------------------------------------------- seeds rule


BASE = [1.00, 1.10, 0.90, 1.05, 0.95]  # mean 1, sd 0.079


def test_seeds_rule_minimize() -> None:
    assert S.seeds_rule(BASE, [0.50, 0.55, 0.45, 0.52, 0.48], "minimize")
    assert not S.seeds_rule(BASE, [0.90, 0.95, 0.85, 0.92, 0.88], "minimize")  # < 2 sd
    assert not S.seeds_rule(BASE, [1.50, 1.55, 1.45, 1.52, 1.48], "minimize")  # worse


def test_seeds_rule_maximize() -> None:
    assert S.seeds_rule(BASE, [1.50, 1.55, 1.45, 1.52, 1.48], "maximize")
    assert not S.seeds_rule(BASE, [1.10, 1.05, 1.15, 1.08, 1.12], "maximize")  # < 2 sd
    assert not S.seeds_rule(BASE, [0.50, 0.55, 0.45, 0.52, 0.48], "maximize")  # worse


def test_seeds_rule_needs_effect_size_too() -> None:
    # The mean moves by 0.1 > 2 x sd(baseline) = 0.02, but the arm is so noisy that d ~ 0.2.
    tight = [1.00, 1.01, 0.99, 1.00]
    noisy = [0.9 + v for v in (-0.9, 0.9, -0.4, 0.4)]
    assert 0.9 - 1.0 < -2 * np.std(tight, ddof=1)
    assert -S.cohens_d(tight, noisy) < 0.5
    assert not S.seeds_rule(tight, noisy, "minimize")


def test_seeds_rule_degenerate() -> None:
    assert not S.seeds_rule([1.0], [0.0, 0.1], "minimize")
    assert S.seeds_rule([1.0, 1.0], [0.5, 0.5], "minimize")  # zero sd: any gain, d = inf


@pytest.mark.parametrize("bad", ["min", "MAXIMIZE", ""])
def test_direction_is_validated(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"'minimize' or 'maximize', got '{bad}'"):
        S.seeds_rule(BASE, BASE, bad)
    with pytest.raises(ValueError, match="minimize"):
        S.compare(BASE, BASE, direction=bad)


# --------------------------------------------------------------------------- power


def nct_power(effect: float, sd: float, n: int, alpha: float, paired: bool) -> float:
    """Two-sided power written independently: both tails of the noncentral t."""
    df = n - 1 if paired else 2 * n - 2
    se = sd / math.sqrt(n) if paired else sd * math.sqrt(2 / n)
    ncp = effect / se
    crit = st.t.isf(alpha / 2, df)
    # P(T < -crit) = 1 - P(T > -crit) is fine at moderate ncp; at df=1 nct.cdf gives nan.
    return float(st.nct.sf(crit, df, ncp) + (1 - st.nct.sf(-crit, df, ncp)))


def integral_power(effect: float, sd: float, n: int, alpha: float, paired: bool) -> float:
    """Power by integrating the normal over the chi-square of the variance: no nct at all."""
    df = n - 1 if paired else 2 * n - 2
    ncp = effect / (sd / math.sqrt(n) if paired else sd * math.sqrt(2 / n))
    crit = st.t.isf(alpha / 2, df)

    log_norm = special.gammaln(df / 2) + (df / 2) * math.log(2)

    def integrand(v: float) -> float:  # scipy.special, not st.*, keeps quad fast
        density = math.exp((df / 2 - 1) * math.log(v) - v / 2 - log_norm)
        s = crit * math.sqrt(v / df)
        return density * (special.ndtr(-s - ncp) + special.ndtr(ncp - s))

    lo, hi = st.chi2.ppf(1e-17, df), st.chi2.isf(1e-17, df)
    return integrate.quad(integrand, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize(
    ("sd", "n", "alpha", "power"),
    [(1.0, 3, 0.05, 0.8), (0.3, 5, 0.05, 0.8), (2.0, 10, 0.01, 0.9), (1.0, 40, 0.05, 0.5)],
)
def test_mde_has_the_requested_power(
    sd: float, n: int, alpha: float, power: float, paired: bool
) -> None:
    mde = S.min_detectable_effect(sd, n, alpha=alpha, power=power, paired=paired)
    assert mde > 0
    assert abs(nct_power(mde, sd, n, alpha, paired) - power) < 1e-9
    assert abs(integral_power(mde, sd, n, alpha, paired) - power) < 1e-9


def test_mde_two_paired_seeds() -> None:
    # df = 1: the lower tail is where scipy's nct.cdf returns nan; the MDE must still be right.
    mde = S.min_detectable_effect(1.0, 2)
    assert abs(integral_power(mde, 1.0, 2, 0.05, True) - 0.8) < 1e-9


def test_mde_scaling_and_edges() -> None:
    base = S.min_detectable_effect(1.0, 8)
    assert close(S.min_detectable_effect(3.0, 8), 3 * base)
    assert S.min_detectable_effect(1.0, 16) < base  # more seeds, smaller effects
    assert S.min_detectable_effect(1.0, 8, paired=False) > base
    assert S.min_detectable_effect(0.0, 8) == 0.0
    assert math.isnan(S.min_detectable_effect(math.nan, 8))
    with pytest.raises(ValueError, match="n must be at least 2"):
        S.min_detectable_effect(1.0, 1)
    with pytest.raises(ValueError, match="power must exceed alpha"):
        S.min_detectable_effect(1.0, 5, alpha=0.05, power=0.04)


def test_seeds_needed_textbook_values() -> None:
    # d = 0.5, alpha 0.05 two-sided, power 0.8: 34 pairs, or 64 per group (Cohen; G*Power)
    assert S.seeds_needed(1.0, 0.5) == 34
    assert S.seeds_needed(2.0, -1.0, paired=False) == 64


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("effect", [0.3, 0.8, 1.5, 4.0])
def test_seeds_needed_is_the_smallest_n(effect: float, paired: bool) -> None:
    n = S.seeds_needed(1.0, effect, paired=paired)
    assert nct_power(effect, 1.0, n, 0.05, paired) >= 0.8
    if n > 2:
        assert nct_power(effect, 1.0, n - 1, 0.05, paired) < 0.8
        # consistent with the MDE: detectable at n, not at n - 1
        assert S.min_detectable_effect(1.0, n, paired=paired) <= effect
        assert S.min_detectable_effect(1.0, n - 1, paired=paired) > effect


def test_seeds_needed_caps_at_max_n() -> None:
    assert S.seeds_needed(1.0, 0.01, max_n=50) == 50
    assert S.seeds_needed(1.0, 0.0) == 1000
    assert S.seeds_needed(0.0, 0.1) == 2


# --------------------------------------------------------------------------- compare, verdict


def test_compare_bundles_consistent_results() -> None:
    base = [1.00, 1.10, 0.90, 1.05, 0.95]
    arm = [0.50, 0.62, 0.41, 0.55, 0.47]
    c = S.compare(base, arm, direction="minimize")
    assert c.baseline == S.summarize(base) and c.arm == S.summarize(arm)
    assert close(c.delta, np.mean(arm) - np.mean(base))
    assert close(c.rel_delta, c.delta / abs(np.mean(base)))
    assert c.welch == S.welch_t(base, arm) and c.paired == S.paired_t(base, arm)
    assert c.paired_used and c.p_value == c.paired.p_value
    assert c.d == S.cohens_d(base, arm) and c.g == S.hedges_g(base, arm) and c.d < 0
    assert c.seeds_rule and c.improved
    assert close(c.mde, S.min_detectable_effect(np.std(base, ddof=1), 5, paired=True))
    assert S.verdict(c) == "better"
    unpaired = S.compare(base, arm, paired=False)
    assert not unpaired.paired_used and unpaired.p_value == unpaired.welch.p_value
    assert close(unpaired.mde, S.min_detectable_effect(np.std(base, ddof=1), 5, paired=False))


def test_compare_unequal_lengths_uses_welch() -> None:
    c = S.compare([1.0, 1.1, 0.9], [2.0, 2.1, 1.9, 2.05])
    assert c.paired is None and not c.paired_used and c.p_value == c.welch.p_value
    assert S.verdict(c) == "worse"  # minimize, and the arm went up significantly


def test_verdicts() -> None:
    base = [1.00, 1.10, 0.90, 1.05, 0.95]
    better = S.compare(base, [0.50, 0.62, 0.41, 0.55, 0.47], "minimize")
    assert S.verdict(better) == "better"
    # the same numbers are a significant loss when larger is better
    assert S.verdict(S.compare(base, [0.50, 0.62, 0.41, 0.55, 0.47], "maximize")) == "worse"
    # significant before correction, not after
    assert S.verdict(better, adjusted_p=0.2) == "no difference"
    assert S.verdict(better, alpha=better.p_value / 2) == "no difference"
    noise = S.compare(base, [1.02, 1.08, 0.93, 1.01, 0.97])
    assert noise.p_value > 0.05 and S.verdict(noise) == "no difference"
    # significant (tight pairs) but smaller than 2 sd of the baseline: fails the seeds rule
    small = S.compare(base, [v - 0.05 for v in base])
    assert small.p_value < 0.05 and small.improved and not small.seeds_rule
    assert S.verdict(small) == "no difference"
    assert S.verdict(S.compare([1.0], [0.5, 0.4])) == "inconclusive"
    assert S.verdict(S.compare([1.0, math.nan], [0.5, 0.4])) == "inconclusive"


def test_compare_degenerate_inputs_do_not_crash() -> None:
    c = S.compare([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert c.p_value == 1.0 and c.d == 0.0 and not c.seeds_rule and c.mde == 0.0
    assert S.verdict(c) == "no difference"
    c = S.compare([1.0, 1.0, 1.0], [0.5, 0.5, 0.5])
    assert c.p_value == 0.0 and c.d == -math.inf and c.seeds_rule
    assert S.verdict(c) == "better"
    c = S.compare([0.0, 0.0], [1.0, 1.0], direction="maximize")
    assert math.isnan(c.rel_delta) and S.verdict(c) == "better"
    c = S.compare([], [])
    assert c.baseline.n == 0 and math.isnan(c.mde) and S.verdict(c) == "inconclusive"
