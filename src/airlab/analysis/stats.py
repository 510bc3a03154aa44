"""Statistics for comparing an arm against a baseline over seeds.

Pure functions over numpy/scipy, float64 throughout. Conventions:

* Every difference is ``b - a`` (arm minus baseline), so a positive ``mean_diff`` or
  ``statistic`` means the second argument is larger.
* NaN entries are dropped before anything is computed: a failed run reports NaN and must
  not poison the statistics of the runs that worked. Callers should count and report the
  failures separately (compare ``len(x)`` with ``Summary.n``). Paired functions drop a pair
  when either side is NaN.
* Degenerate inputs never raise: fewer than two values gives NaN spreads, intervals and
  p-values; zero variance gives an exact answer (see :func:`welch_t`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, special
from scipy import stats as st

Samples = Sequence[float] | np.ndarray

DIRECTIONS = ("minimize", "maximize")
NAN = float("nan")

VERDICTS = ("better", "worse", "no difference", "inconclusive")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one sample (NaNs dropped; ``n`` counts what is left)."""

    n: int
    mean: float
    sd: float  # ddof=1; nan when n < 2
    sem: float  # sd / sqrt(n); nan when n < 2
    ci_low: float  # 95 % t interval of the mean; nan when n < 2
    ci_high: float
    min: float
    max: float


@dataclass(frozen=True)
class TTest:
    """A two-sided t test of ``b - a`` with the 95 % confidence interval of that difference."""

    statistic: float
    df: float
    p_value: float
    mean_diff: float  # mean(b) - mean(a), or mean(b - a) for paired tests
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Comparison:
    """Everything :func:`compare` knows about an arm against its baseline."""

    direction: str
    baseline: Summary
    arm: Summary
    delta: float  # mean(arm) - mean(baseline)
    rel_delta: float  # delta / |mean(baseline)|; nan when the baseline mean is 0
    welch: TTest
    paired: TTest | None  # None when the two samples have different lengths
    paired_used: bool  # whether p_value comes from the paired test
    p_value: float
    d: float  # Cohen's d of arm vs baseline (signed arm - baseline)
    g: float  # Hedges' g, same sign
    seeds_rule: bool
    mde: float  # minimum detectable difference at the baseline's sd and n
    improved: bool  # good direction and p < 0.05 (no seeds rule; see verdict())


# --------------------------------------------------------------------------- helpers


def _clean(x: Samples) -> np.ndarray:
    """1-D float64 copy of ``x`` without NaNs (failed runs)."""
    arr = np.asarray(x, dtype=np.float64).ravel()
    return arr[~np.isnan(arr)]


def _clean_pairs(a: Samples, b: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Paired float64 arrays without any pair that has a NaN on either side."""
    aa = np.asarray(a, dtype=np.float64).ravel()
    bb = np.asarray(b, dtype=np.float64).ravel()
    if aa.size != bb.size:
        raise ValueError(
            f"paired samples need equal lengths, got len(a)={aa.size} and len(b)={bb.size}"
        )
    keep = ~(np.isnan(aa) | np.isnan(bb))
    return aa[keep], bb[keep]


def _is_constant(x: np.ndarray) -> bool:
    return x.size > 0 and bool(x.min() == x.max())


def _mean(x: np.ndarray) -> float:
    if x.size == 0:
        return NAN
    # A constant sample's mean is its value exactly; np.mean can be off by an ulp, which
    # would turn "equal means" into a spurious infinite effect in the zero-variance cases.
    if _is_constant(x):
        return float(x[0])
    return float(np.mean(x))


def _var(x: np.ndarray) -> float:
    """Sample variance (ddof=1); exactly 0 for a constant sample, nan when n < 2."""
    if x.size < 2:
        return NAN
    # Same reason as _mean: identical values must give a variance of exactly zero.
    if _is_constant(x):
        return 0.0
    return float(np.var(x, ddof=1))


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")


def _sign_toward_improvement(direction: str) -> float:
    """+1 when larger is better, -1 when smaller is better."""
    _check_direction(direction)
    return 1.0 if direction == "maximize" else -1.0


def _t_test(mean_diff: float, se: float, df: float, confidence: float = 0.95) -> TTest:
    """Two-sided t test of ``mean_diff`` given its standard error and degrees of freedom.

    se == 0 (both samples without spread) has no t distribution to speak of; the difference
    is then known exactly, so the answer is certain: p = 1 when it is 0, else p = 0.
    """
    if math.isnan(mean_diff) or math.isnan(se):
        return TTest(NAN, df, NAN, mean_diff, NAN, NAN)
    if se == 0.0:
        if mean_diff == 0.0:
            return TTest(0.0, df, 1.0, 0.0, 0.0, 0.0)
        return TTest(math.copysign(math.inf, mean_diff), df, 0.0, mean_diff, mean_diff, mean_diff)
    stat = mean_diff / se
    # sf(|t|) rather than 1 - cdf keeps tiny p-values accurate.
    p = float(min(1.0, 2.0 * st.t.sf(abs(stat), df)))
    half = float(st.t.ppf(0.5 + confidence / 2.0, df)) * se
    return TTest(float(stat), float(df), p, mean_diff, mean_diff - half, mean_diff + half)


# --------------------------------------------------------------------------- descriptive


def t_interval(x: Samples, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t confidence interval of the mean (NaNs dropped).

    (nan, nan) when n < 2; (mean, mean) when all values are identical (scipy would give nan
    for a zero scale, but the mean of a constant sample is known exactly).
    """
    _check_prob("confidence", confidence)
    arr = _clean(x)
    n = arr.size
    if n < 2:
        return (NAN, NAN)
    mean = _mean(arr)
    sem = math.sqrt(_var(arr) / n)
    half = float(st.t.ppf(0.5 + confidence / 2.0, n - 1)) * sem
    return (mean - half, mean + half)


def summarize(x: Samples) -> Summary:
    """n, mean, sd (ddof=1), sem, 95 % t interval, min and max of ``x`` with NaNs dropped."""
    arr = _clean(x)
    n = int(arr.size)
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN, NAN, NAN, NAN)
    var = _var(arr)
    sd = math.sqrt(var) if n >= 2 else NAN
    sem = sd / math.sqrt(n) if n >= 2 else NAN
    lo, hi = t_interval(arr)
    return Summary(n, _mean(arr), sd, sem, lo, hi, float(arr.min()), float(arr.max()))


# --------------------------------------------------------------------------- tests


def welch_t(a: Samples, b: Samples) -> TTest:
    """Welch's unequal-variance t test of mean(b) - mean(a), two-sided.

    Equals ``scipy.stats.ttest_ind(b, a, equal_var=False)`` with the Welch-Satterthwaite df;
    the CI is the 95 % Welch interval of the mean difference.

    Degenerate cases: either group with n < 2 gives a nan statistic, df, p and CI. Both
    groups constant gives p = 1 and statistic 0 when the means are equal, p = 0 and statistic
    +-inf when they differ, a zero-width CI, and df = nan (Welch's df is 0/0 there).
    """
    xa, xb = _clean(a), _clean(b)
    na, nb = xa.size, xb.size
    diff = _mean(xb) - _mean(xa) if na and nb else NAN
    if na < 2 or nb < 2:
        return TTest(NAN, NAN, NAN, diff, NAN, NAN)
    va, vb = _var(xa) / na, _var(xb) / nb
    se2 = va + vb
    df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1)) if se2 > 0 else NAN
    return _t_test(diff, math.sqrt(se2), df)


def paired_t(a: Samples, b: Samples) -> TTest:
    """Paired t test of the per-pair differences ``b - a``, two-sided.

    Equals ``scipy.stats.ttest_rel(b, a)``; the CI is the 95 % t interval of the mean paired
    difference. Raises ValueError when the lengths differ. Pairs with a NaN on either side are
    dropped. Fewer than two pairs gives nan; constant differences give p = 1 (all zero) or
    p = 0 (nonzero) with a zero-width CI.
    """
    xa, xb = _clean_pairs(a, b)
    d = xb - xa
    n = d.size
    diff = _mean(d)
    if n < 2:
        return TTest(NAN, NAN, NAN, diff, NAN, NAN)
    return _t_test(diff, math.sqrt(_var(d) / n), float(n - 1))


# --------------------------------------------------------------------------- effect sizes


def _standardize(diff: float, sd: float) -> float:
    """diff / sd, with sd == 0 mapped to 0 (no difference) or +-inf (a certain one)."""
    if math.isnan(diff) or math.isnan(sd):
        return NAN
    if sd == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / sd


def _pooled_sd(xa: np.ndarray, xb: np.ndarray) -> float:
    na, nb = xa.size, xb.size
    if na < 2 or nb < 2:
        return NAN
    return math.sqrt(((na - 1) * _var(xa) + (nb - 1) * _var(xb)) / (na + nb - 2))


def cohens_d(a: Samples, b: Samples) -> float:
    """(mean(b) - mean(a)) / pooled sd, weights (n1-1), (n2-1). nan if either n < 2."""
    xa, xb = _clean(a), _clean(b)
    sd = _pooled_sd(xa, xb)
    if math.isnan(sd):
        return NAN
    return _standardize(_mean(xb) - _mean(xa), sd)


def hedges_correction(df: float) -> float:
    """Exact small-sample bias correction J = G(df/2) / (sqrt(df/2) G((df-1)/2)).

    Computed through log-gamma because the gamma functions overflow long before J leaves
    (0, 1); J -> 1 - 3 / (4 df - 1) for large df. nan for df <= 1, where it is undefined.
    """
    if not df > 1:
        return NAN
    return math.exp(special.gammaln(df / 2.0) - special.gammaln((df - 1.0) / 2.0)) / math.sqrt(
        df / 2.0
    )


def hedges_g(a: Samples, b: Samples) -> float:
    """Cohen's d times the exact correction J with df = n1 + n2 - 2. nan if either n < 2."""
    xa, xb = _clean(a), _clean(b)
    d = cohens_d(xa, xb)
    if math.isnan(d):
        return NAN
    return d * hedges_correction(xa.size + xb.size - 2)


def paired_cohens_dz(a: Samples, b: Samples) -> float:
    """Mean of the differences b - a over their sd (ddof=1). nan with fewer than 2 pairs."""
    xa, xb = _clean_pairs(a, b)
    d = xb - xa
    if d.size < 2:
        return NAN
    return _standardize(_mean(d), math.sqrt(_var(d)))


# --------------------------------------------------------------------------- multiplicity


def holm(pvalues: Samples) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Step-down: the i-th smallest of m p-values is multiplied by (m - i + 1), then a running
    maximum keeps the adjusted values monotone, clipped at 1. NaN entries (tests that could
    not run) are returned as NaN and do not count towards m.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0.0) | (p[ok] > 1.0)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok][(p[ok] < 0) | (p[ok] > 1)]}")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(ok)
    m = idx.size
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out.tolist()


# --------------------------------------------------------------------------- lab rules


def seeds_rule(baseline: Samples, arm: Samples, direction: str = "minimize") -> bool:
    """The lab's rule for a real improvement over seeds.

    The mean must move in the good direction by more than 2 x sd(baseline), AND Cohen's d,
    signed so that improvement is positive, must be >= 0.5. The first guards against wins
    within seed noise, the second against wins a noisy arm makes unreliable. False whenever
    either quantity is undefined (n < 2).
    """
    sign = _sign_toward_improvement(direction)
    xb, xa = _clean(baseline), _clean(arm)
    if xb.size < 2 or xa.size < 2:
        return False
    improvement = sign * (_mean(xa) - _mean(xb))
    d = sign * cohens_d(xb, xa)
    return bool(improvement > 2.0 * math.sqrt(_var(xb)) and d >= 0.5)


# --------------------------------------------------------------------------- power


def _df_and_se_factor(n: int, paired: bool) -> tuple[float, float]:
    """Degrees of freedom and se/sd for a paired (n pairs) or two-sample (n per arm) test."""
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n!r}")
    if paired:
        return float(n - 1), 1.0 / math.sqrt(n)
    return float(2 * n - 2), math.sqrt(2.0 / n)


def _power_at_ncp(ncp: float, df: float, alpha: float) -> float:
    """Power of a two-sided t test at noncentrality ``ncp`` (both rejection tails count)."""
    crit = st.t.ppf(1.0 - alpha / 2.0, df)
    # P(T < -crit | ncp) is taken as P(T > crit | -ncp) by symmetry: scipy's nct.cdf returns
    # nan deep in the lower tail (e.g. df=1, ncp=16), while the mirrored sf stays accurate.
    return float(st.nct.sf(crit, df, ncp) + st.nct.sf(crit, df, -ncp))


def _check_power_args(sd: float, alpha: float, power: float) -> None:
    if sd < 0:
        raise ValueError(f"sd must be >= 0, got {sd!r}")
    _check_prob("alpha", alpha)
    _check_prob("power", power)
    if power <= alpha:
        # The two-sided power is alpha at zero effect, so the target would be met by nothing.
        raise ValueError(f"power must exceed alpha, got power={power!r} and alpha={alpha!r}")


def min_detectable_effect(
    sd: float, n: int, alpha: float = 0.05, power: float = 0.8, paired: bool = True
) -> float:
    """Smallest difference in means a two-sided t test detects with the given power.

    Paired: n pairs, df = n - 1, se = sd / sqrt(n) (sd of the differences). Unpaired: n seeds
    per arm with a common sd, df = 2n - 2, se = sd * sqrt(2 / n). Solved exactly on the
    noncentral t distribution rather than with the normal approximation, which is badly
    optimistic at the handful of seeds the lab runs. nan when sd is nan.
    """
    if math.isnan(sd):
        return NAN
    _check_power_args(sd, alpha, power)
    df, se_factor = _df_and_se_factor(n, paired)
    return float(_ncp_for_power(df, alpha, power) * se_factor * sd)


@lru_cache(maxsize=4096)
def _ncp_for_power(df: float, alpha: float, power: float) -> float:
    """Noncentrality at which the two-sided t test on ``df`` reaches ``power``. It does not
    depend on the sd (the MDE scales with it), so it is solved once per (df, alpha, power):
    every verdict and simulated trial asks the same few."""

    def gap(ncp: float) -> float:
        return _power_at_ncp(ncp, df, alpha) - power

    hi = 1.0
    while gap(hi) < 0.0:  # power grows with ncp, so doubling brackets the root
        hi *= 2.0
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps,
                                 maxiter=500))


def seeds_needed(
    sd: float,
    effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    paired: bool = True,
    max_n: int = 1000,
) -> int:
    """Smallest n (pairs, or seeds per arm) whose t test detects ``|effect|`` with the power.

    Returns ``max_n`` when even that many do not reach the power (including effect == 0).
    """
    _check_power_args(sd, alpha, power)
    if max_n < 2:
        raise ValueError(f"max_n must be at least 2, got {max_n!r}")
    effect = abs(effect)

    def reaches(n: int) -> bool:
        df, se_factor = _df_and_se_factor(n, paired)
        if sd == 0.0:
            return effect > 0.0
        return _power_at_ncp(effect / (se_factor * sd), df, alpha) >= power

    return first_n_reaching(reaches, max_n)


def first_n_reaching(reaches: Callable[[int], bool], max_n: int) -> int:
    """The smallest n in 2..max_n with ``reaches(n)`` (``max_n`` when none does).

    Power rises with n (larger ncp and df), so bisect; ``reaches(1)`` is treated as False.
    """
    if not reaches(max_n):
        return max_n
    lo, hi = 1, max_n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reaches(mid):
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------- comparison


def compare(
    baseline: Samples, arm: Samples, direction: str = "minimize", paired: bool = True
) -> Comparison:
    """Compare an arm with its baseline over seeds (NaNs, i.e. failed runs, are dropped).

    The paired test runs when both samples have the same length (seed i of each arm is a
    pair); ``p_value`` comes from it when ``paired`` is True, else from Welch's test. The MDE
    uses the baseline's sd and the n of the test that produced ``p_value``.
    """
    sign = _sign_toward_improvement(direction)
    base_s, arm_s = summarize(baseline), summarize(arm)
    delta = arm_s.mean - base_s.mean
    rel = delta / abs(base_s.mean) if base_s.n and base_s.mean != 0.0 else NAN
    welch = welch_t(baseline, arm)
    same_len = np.asarray(baseline).size == np.asarray(arm).size
    ptest = paired_t(baseline, arm) if same_len else None
    use_paired = paired and ptest is not None
    primary = ptest if use_paired and ptest is not None else welch
    if use_paired:
        n_pairs = _clean_pairs(baseline, arm)[0].size
        mde = min_detectable_effect(base_s.sd, n_pairs, paired=True) if n_pairs >= 2 else NAN
    else:
        n = base_s.n
        mde = min_detectable_effect(base_s.sd, n, paired=False) if n >= 2 else NAN
    improved = bool(sign * primary.mean_diff > 0 and primary.p_value < 0.05)
    return Comparison(
        direction=direction,
        baseline=base_s,
        arm=arm_s,
        delta=delta,
        rel_delta=rel,
        welch=welch,
        paired=ptest,
        paired_used=use_paired,
        p_value=primary.p_value,
        d=cohens_d(baseline, arm),
        g=hedges_g(baseline, arm),
        seeds_rule=seeds_rule(baseline, arm, direction),
        mde=mde,
        improved=improved,
    )


def verdict(comparison: Comparison, alpha: float = 0.05, adjusted_p: float | None = None) -> str:
    """One of "better", "worse", "no difference", "inconclusive".

    * "inconclusive": either arm has n < 2 (or the test produced no p-value).
    * "better": significant (``adjusted_p``, e.g. from :func:`holm`, when given) in the good
      direction AND the seeds rule holds.
    * "worse": significant in the bad direction.
    * "no difference": otherwise, including a significant improvement too small for the
      seeds rule: the lab does not count a gain that seed noise could erase.
    """
    _check_prob("alpha", alpha)
    c = comparison
    sign = _sign_toward_improvement(c.direction)
    p = c.p_value if adjusted_p is None else adjusted_p
    if c.baseline.n < 2 or c.arm.n < 2 or math.isnan(p):
        return "inconclusive"
    if p >= alpha:
        return "no difference"
    test = c.paired if c.paired_used and c.paired is not None else c.welch
    towards = sign * test.mean_diff
    if towards > 0 and c.seeds_rule:
        return "better"
    if towards < 0:
        return "worse"
    return "no difference"
