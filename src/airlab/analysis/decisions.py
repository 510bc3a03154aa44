"""Decisions over seeds: paired tests with Holm, equivalence (TOST), power, sequential looks.

Pure numpy/scipy, float64. The rules (each one calibrated by ``benchmarks/sim_rules.py``; the
measured figures are in docs/decision_rules.md):

* **Equivalent**: two one-sided paired t tests against ``+-margin``; the TOST p-value is the
  larger of the two; Holm across arms at ``alpha``. It is decided first: a difference whose
  (1 - 2 alpha) interval lies wholly inside the margin is "equivalent" even when the paired
  test also finds it (then it is *negligible*: real, but smaller than what matters), never
  "better" or "worse". Absence of a significant difference is never read as equivalence.
* **Better / worse**: otherwise, the two-sided paired t test of the per-seed differences ``arm
  - baseline``; Holm across the arms of an experiment at ``alpha`` (family-wise). The seeds'
  rule (improvement > 2 sd of the baseline and Cohen's d >= 0.5) is reported beside it as the
  seeds defined it; it does not gate the decision.
* **Quality kept**: "better", or "equivalent" without a significant worsening. A difference
  the paired test calls worse is never kept, however small (``ArmDecision.quality_kept``).
* **Margin**: declared by the spec (the smallest effect that matters, taken as exact), else
  :func:`default_margin` = ``MARGIN_SIGMAS`` (1) x the lower ``SD_CONFIDENCE`` (80 %)
  confidence bound of the noise floor's per-run sd: the floor is an estimate on few degrees
  of freedom, and a margin that came out too wide would let a real loss count as kept. Where
  a wider margin would be the optimistic error (a gain shown *beyond* the margin) the upper
  bound is used (:func:`margin_upper`).
* **Zero spread**: differences with no spread have no t distribution. Without a noise floor the
  test is undecidable (p = nan, label "undecided", note says why); with one, the sd used is
  ``max(observed sd, floor sd of differences)``, which can only make a test more conservative.
* **Power**: the MDE and seeds-needed use the sd of *paired differences* (from a pilot or the
  noise floor), at ``alpha / arms`` (the first Holm step: the design case of one real effect
  among nulls). A design (how many pairs) is sized by :func:`design_pairs` for a declared
  effect, never an observed one, at the upper confidence bound of an estimated sd.
* **Sequential**: the overall ``alpha`` is spent over looks by ``alpha * (n / n_max) ** rho``
  (a Kim-DeMets power family; the union bound over looks makes it valid for any correlation
  between looks), Holm across the still-undecided arms inside a look. The state is a plain
  dict (JSON-safe) that records the looks done, the alpha spent per arm and the tests of the
  look that decided each arm, so calling again continues the spending instead of restarting
  it, and the stored verdict is the sequential decision (``compare.apply_decisions``).

Batch functions (``*_batch``) take arrays whose last axis is the seeds (or arms, for Holm) and
any leading axes; the scalar functions and the simulation share them, so what is simulated is
what runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as st

from airlab.analysis import stats

Samples = Sequence[float] | np.ndarray
ALPHA = 0.05
# Default margin in noise-floor sds of one run's metric. One sd, not the seeds' 2 sd for a
# *gain*: with 2 sd a truly 1 sd worse (and cheaper) arm was kept, and so rated publishable,
# in up to 56 % of simulated experiments even when a shown worsening is never kept (1 sd at
# the floor sd's lower bound: <= 2.7 %; docs/decision_rules.md).
MARGIN_SIGMAS = 1.0
# One-sided confidence of the bounds put on an estimated sd (the floor's, a pilot's): the
# margin uses the lower bound, the "beyond the margin" test and designs the upper one.
SD_CONFIDENCE = 0.8
SPEND_RHO = 2.0  # alpha spent by look n of n_max: alpha * (n / n_max) ** rho
LABELS = ("better", "worse", "equivalent", "undecided")
STATE_VERSION = 1


# --------------------------------------------------------------------------- noise floor


@dataclass(frozen=True)
class NoiseFloor:
    """Seed noise of one metric measured by A/A runs (the same config on disjoint seed sets).

    ``sd`` is one run's sd of the metric (pooled over the two sets, df = n_a + n_b - 2);
    ``sd_diff`` is the sd of a difference between two runs on different seeds, sd * sqrt(2).
    Pairs that share a seed are usually correlated, so ``sd_diff`` is an upper bound for
    them: a design from it is conservative.
    """

    n: int  # runs measured (both sets)
    df: int
    mean: float
    sd: float
    sd_diff: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoiseFloor:
        return cls(int(d["n"]), int(d["df"]), float(d["mean"]), float(d["sd"]),
                   float(d["sd_diff"]))


def noise_floor(a: Samples, b: Samples) -> NoiseFloor:
    """Noise floor from two A/A sets of one metric (NaNs, failed runs, dropped).

    The sd pools the two sets around their own means, so a systematic offset between them
    (there should be none) does not inflate it. nan sd when fewer than 2 runs per set.
    """
    xa, xb = stats._clean(a), stats._clean(b)
    n = int(xa.size + xb.size)
    mean = float(np.mean(np.concatenate([xa, xb]))) if n else math.nan
    if xa.size < 2 or xb.size < 2:
        return NoiseFloor(n, 0, mean, math.nan, math.nan)
    sd = stats._pooled_sd(xa, xb)
    return NoiseFloor(n, n - 2, mean, sd, sd * math.sqrt(2.0))


def sd_bound_factors(df: float | np.ndarray, confidence: float = SD_CONFIDENCE
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Factors that turn an sd estimated on ``df`` degrees of freedom into its one-sided lower
    and upper ``confidence`` bounds: ``df s^2 / sigma^2 ~ chi2(df)``, so sigma >= s sqrt(df /
    chi2_c) and sigma <= s sqrt(df / chi2_{1-c}), each with probability c. Infinite df: 1
    (known); df < 1: nan. Arrays of df give arrays."""
    stats._check_prob("confidence", confidence)
    d = np.asarray(df, dtype=np.float64)
    ok = d >= 1
    safe = np.where(ok & np.isfinite(d), d, 1.0)
    lo = np.sqrt(safe / st.chi2.ppf(confidence, safe))
    hi = np.sqrt(safe / st.chi2.ppf(1.0 - confidence, safe))
    lo = np.where(np.isinf(d), 1.0, np.where(ok, lo, np.nan))
    hi = np.where(np.isinf(d), 1.0, np.where(ok, hi, np.nan))
    return lo, hi


def sd_bounds(sd: float, df: float, confidence: float = SD_CONFIDENCE) -> tuple[float, float]:
    """One-sided lower and upper ``confidence`` bounds of a true sd estimated as ``sd`` on
    ``df`` degrees of freedom (:func:`sd_bound_factors`); (nan, nan) for a nan sd or df < 1."""
    if math.isnan(sd) or math.isnan(df):
        return math.nan, math.nan
    if sd < 0:
        raise ValueError(f"sd must be >= 0, got {sd!r}")
    lo, hi = sd_bound_factors(df, confidence)
    return sd * float(lo), sd * float(hi)


def default_margin(floor_sd: float, df: float = math.inf, k: float = MARGIN_SIGMAS,
                   confidence: float = SD_CONFIDENCE) -> float:
    """Equivalence margin from a measured sd: ``k`` x its lower ``confidence`` bound.

    ``df``: the degrees of freedom of ``floor_sd`` (``NoiseFloor.df``; infinite: taken as
    exact). The lower bound carries the floor's own error in the direction that matters: a
    margin estimated too wide would count a real loss as "quality kept" (a 3 + 3-run floor
    taken at face value kept a true 2 sd worsening in up to 25 % of simulations with a 2 sd
    margin). nan when the sd is nan.
    """
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k!r}")
    return k * sd_bounds(floor_sd, df, confidence)[0]


def margin_upper(floor_sd: float, df: float = math.inf, k: float = MARGIN_SIGMAS,
                 confidence: float = SD_CONFIDENCE) -> float:
    """The margin at the *upper* bound of the sd: for a gain shown beyond the margin, where a
    margin estimated too narrow is the optimistic error. Equals :func:`default_margin` for an
    exact sd."""
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k!r}")
    return k * sd_bounds(floor_sd, df, confidence)[1]


# --------------------------------------------------------------------------- batch core


def _moments_batch(d: np.ndarray, sd_floor: float | np.ndarray = 0.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mean, sd used, se and df of the last axis (no NaNs). sd of 0 with no floor -> nan."""
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    sd = d.std(axis=-1, ddof=1) if n >= 2 else np.full(mean.shape, np.nan)
    # Rounding can leave a tiny sd for identical values; treat spread below 1e-12 of the
    # scale as none, so identical runs are "no spread" rather than an astronomic t.
    scale = np.maximum(np.abs(d).max(axis=-1), 1e-300)
    sd = np.where(sd <= 1e-12 * scale, 0.0, sd)
    sd = np.maximum(sd, sd_floor)
    sd = np.where(sd > 0, sd, np.nan)
    se = sd / math.sqrt(n)
    return mean, sd, se, np.full(mean.shape, float(n - 1))


def paired_p_batch(d: np.ndarray, sd_floor: float | np.ndarray = 0.0) -> np.ndarray:
    """Two-sided paired t p-values of the differences on the last axis (nan: undecidable)."""
    mean, _, se, df = _moments_batch(d, sd_floor)
    t = mean / se
    return np.minimum(1.0, 2.0 * st.t.sf(np.abs(t), df))


def tost_p_batch(d: np.ndarray, margin: float | np.ndarray,
                 sd_floor: float | np.ndarray = 0.0) -> np.ndarray:
    """TOST p-values: max of the one-sided p of mean > -margin and of mean < +margin."""
    mean, _, se, df = _moments_batch(d, sd_floor)
    m = np.asarray(margin, dtype=np.float64)
    p_low = st.t.sf((mean + m) / se, df)  # H0: mean <= -margin
    p_high = st.t.cdf((mean - m) / se, df)  # H0: mean >= +margin
    p = np.maximum(p_low, p_high)
    return np.where(m > 0, p, np.nan)


def holm_batch(p: np.ndarray) -> np.ndarray:
    """Holm adjusted p-values along the last axis; NaN entries are left out of m and kept NaN."""
    p = np.asarray(p, dtype=np.float64)
    nan = np.isnan(p)
    m = (~nan).sum(axis=-1, keepdims=True)
    filled = np.where(nan, np.inf, p)
    order = np.argsort(filled, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(filled, order, axis=-1)
    rank = np.arange(p.shape[-1])
    scaled = np.where(np.isinf(sorted_p), np.nan, sorted_p) * (m - rank)
    scaled = np.minimum(1.0, np.fmax.accumulate(np.nan_to_num(scaled, nan=-1.0), axis=-1))
    out = np.empty_like(p)
    np.put_along_axis(out, order, scaled, axis=-1)
    return np.where(nan, np.nan, out)


def beyond_p_batch(d: np.ndarray, margin: float | np.ndarray, sign: float,
                   sd_floor: float | np.ndarray = 0.0) -> np.ndarray:
    """One-sided p of "the gain exceeds the margin": H0 ``sign * mean <= margin`` against
    ``sign * mean > margin`` (``sign`` +1 when larger is better). nan without a margin."""
    mean, _, se, df = _moments_batch(d, sd_floor)
    m = np.asarray(margin, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        p = st.t.sf((sign * mean - m) / se, df)
    return np.where(m > 0, p, np.nan)


def label_batch(mean: np.ndarray, p_holm: np.ndarray, p_tost_holm: np.ndarray,
                sign: float, alpha: float | np.ndarray) -> np.ndarray:
    """Label codes (index into LABELS): equivalent > better > worse > undecided.

    Equivalence comes first: an interval wholly inside the margin is "equivalent" (negligible
    when the paired test also finds the difference), never "better" or "worse".
    """
    sig = p_holm < alpha
    towards = sign * mean
    out = np.full(np.shape(mean), 3, dtype=np.int8)
    out = np.where(sig & (towards < 0), 1, out)
    out = np.where(sig & (towards > 0), 0, out)
    out = np.where(p_tost_holm < alpha, 2, out)
    return out


def shown_batch(mean: np.ndarray, p_holm: np.ndarray, sign: float,
                alpha: float | np.ndarray) -> np.ndarray:
    """What the paired test alone shows, whatever the label: +1 better, -1 worse, 0 nothing.

    An "equivalent" arm with -1 is a real but negligible loss: never "quality kept".
    """
    sig = p_holm < alpha
    towards = sign * np.asarray(mean)
    return np.where(sig & (towards > 0), 1, np.where(sig & (towards < 0), -1, 0)).astype(np.int8)


def kept_batch(label: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """Quality kept: "better", or "equivalent" with no significant worsening."""
    return (label == 0) | ((label == 2) & (shown >= 0))


SHOWN = {1: "better", -1: "worse", 0: ""}


# --------------------------------------------------------------------------- one arm


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided paired t tests of ``arm - baseline`` against ``+-margin``."""

    n: int
    mean_diff: float
    sd_diff: float  # the sd used (floored when a floor was given); nan if undecidable
    margin: float
    p_lower: float  # H0: mean_diff <= -margin
    p_upper: float  # H0: mean_diff >= +margin
    p: float  # max of the two
    ci_low: float  # the (1 - 2 alpha) interval; inside +-margin iff equivalent at alpha
    ci_high: float
    equivalent: bool


def _diffs(baseline: Samples, arm: Samples) -> np.ndarray:
    b, a = stats._clean_pairs(baseline, arm)
    return a - b


def tost(baseline: Samples, arm: Samples, margin: float, alpha: float = ALPHA,
         sd_floor: float = 0.0) -> Equivalence:
    """Paired TOST of ``arm - baseline`` within ``+-margin`` (pairs with a NaN dropped).

    Equals ``scipy.stats.ttest_1samp(d, -margin, alternative="greater")`` and
    ``ttest_1samp(d, margin, alternative="less")``; p is the larger. Fewer than 2 pairs, a
    margin <= 0 or nan, or differences without spread and no ``sd_floor`` give p = nan and
    ``equivalent`` False.
    """
    stats._check_prob("alpha", alpha)
    d = _diffs(baseline, arm)
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    bad = n < 2 or math.isnan(margin) or margin <= 0
    if bad:
        return Equivalence(n, mean, math.nan, margin, math.nan, math.nan, math.nan,
                           math.nan, math.nan, False)
    mean_a, sd, se, df = _moments_batch(d, sd_floor)
    m = float(margin)
    p_low = float(st.t.sf((mean_a + m) / se, df))
    p_high = float(st.t.cdf((mean_a - m) / se, df))
    p = max(p_low, p_high) if not (math.isnan(p_low) or math.isnan(p_high)) else math.nan
    half = float(st.t.ppf(1.0 - alpha, n - 1) * se)
    return Equivalence(n, mean, float(sd), m, p_low, p_high, p, mean - half, mean + half,
                       bool(p < alpha))


@dataclass(frozen=True)
class ArmDecision:
    """What the decision rules say about one arm against the baseline."""

    arm: str
    n: int  # pairs used
    mean_diff: float  # mean of arm - baseline over pairs
    sd_diff: float  # sd of the differences actually used (nan: no spread, no floor)
    ci_low: float  # 95 % paired t interval of mean_diff (unadjusted)
    ci_high: float
    p: float  # two-sided paired t
    p_holm: float
    margin: float
    p_tost: float
    p_tost_holm: float
    label: str  # equivalent | better | worse | undecided
    equivalent: bool  # TOST (Holm) within +-margin
    dz: float  # mean_diff / sd_diff signed toward improvement; nan without spread
    seeds_rule: bool  # the seeds' rule, as they defined it (reported, not a gate)
    note: str
    shown: str = ""  # what the paired test alone shows: "better" | "worse" | ""
    margin_upper: float = math.nan  # the margin at the sd's upper bound (gain beyond it)
    p_beyond: float = math.nan  # one-sided: the gain exceeds margin_upper
    p_beyond_holm: float = math.nan
    alpha: float = ALPHA  # the level the label was decided at (a sequential look's spend)
    look: int = 0  # 0: fixed n; else the pairs at the sequential look that decided the label

    @property
    def negligible(self) -> bool:
        """Equivalent, yet the paired test finds the difference: real, smaller than matters."""
        return self.label == "equivalent" and bool(self.shown)

    @property
    def quality_kept(self) -> bool:
        """Quality kept: shown better, or shown within the margin with no significant
        worsening (never "not shown worse", and never a loss the paired test finds)."""
        return self.label == "better" or (self.label == "equivalent" and self.shown != "worse")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quality_kept"] = self.quality_kept
        out["negligible"] = self.negligible
        return out


def decide(baseline: Samples, arms: Mapping[str, Samples], direction: str = "minimize",
           margin: float = math.nan, alpha: float = ALPHA, sd_floor: float = 0.0,
           margin_upper: float = math.nan) -> dict[str, ArmDecision]:
    """Decide every arm against the baseline: TOST + Holm, paired t + Holm, seeds rule beside.

    ``arms`` maps arm name -> per-seed values in the baseline's seed order (NaN for a failed
    run; the pair is dropped). ``margin`` nan or <= 0: no equivalence can be shown.
    ``margin_upper``: the margin a gain must be shown to exceed (``p_beyond``; default
    ``margin``). ``sd_floor`` floors the sd of the differences (0: none, and no spread means
    undecidable). The floor's ``sd_diff`` is for pairs on different seeds; pairs that share a
    seed are usually correlated, so flooring them at it makes their tests conservative.
    """
    stats._check_prob("alpha", alpha)
    sign = stats._sign_toward_improvement(direction)
    upper = margin if math.isnan(margin_upper) else margin_upper
    names = list(arms)
    rows = [_diffs(baseline, arms[name]) for name in names]
    p = np.full(len(names), np.nan)
    pt = np.full(len(names), np.nan)
    pb = np.full(len(names), np.nan)
    mom: list[tuple[float, float, float]] = []
    for i, d in enumerate(rows):
        if d.size >= 2:
            m_a, sd_a, se_a, _ = _moments_batch(d, sd_floor)
            p[i] = paired_p_batch(d, sd_floor)
            if margin > 0:
                pt[i] = tost_p_batch(d, margin, sd_floor)
            if upper > 0:
                pb[i] = beyond_p_batch(d, upper, sign, sd_floor)
            mom.append((float(m_a), float(sd_a), float(se_a)))
        else:
            mom.append((float(d.mean()) if d.size else math.nan, math.nan, math.nan))
    ph, pth, pbh = holm_batch(p), holm_batch(pt), holm_batch(pb)
    means = np.array([m[0] for m in mom])
    codes = label_batch(means, ph, pth, sign, alpha)
    shown = shown_batch(means, ph, sign, alpha)
    out: dict[str, ArmDecision] = {}
    for i, name in enumerate(names):
        d = rows[i]
        mean, sd, se = mom[i]
        n = int(d.size)
        half = float(st.t.ppf(0.975, n - 1)) * se if n >= 2 else math.nan
        if n < 2:
            note = f"{n} finished pair(s): at least 2 are needed"
        elif math.isnan(sd):
            note = "the differences have no spread (identical runs?): the test is undecidable"
        elif not margin > 0:
            note = "no equivalence margin: declare one or measure a noise floor"
        else:
            note = ""
        b, a = stats._clean_pairs(baseline, arms[name])
        out[name] = ArmDecision(
            arm=name, n=n, mean_diff=mean, sd_diff=sd, ci_low=mean - half, ci_high=mean + half,
            p=float(p[i]), p_holm=float(ph[i]), margin=margin, p_tost=float(pt[i]),
            p_tost_holm=float(pth[i]), label=LABELS[int(codes[i])],
            equivalent=bool(pth[i] < alpha), dz=sign * mean / sd if sd > 0 else math.nan,
            seeds_rule=stats.seeds_rule(b, a, direction), note=note,
            shown=SHOWN[int(shown[i])], margin_upper=upper, p_beyond=float(pb[i]),
            p_beyond_holm=float(pbh[i]), alpha=alpha)
    return out


def sequential_decision(fixed: ArmDecision, state: Mapping[str, Any]) -> ArmDecision:
    """The arm's decision as the sequential procedure took it (``state`` of
    :func:`sequential_look`): its label, and the tests and alpha of the look that decided it
    (the last look for an arm still undecided). The mean, interval and effect size stay those
    of ``fixed`` (all the pairs now stored), as description. An arm the state never looked at
    is "undecided" at alpha 0: at a data-dependent n no fixed-n test may decide it.
    """
    label = state.get("decided", {}).get(fixed.arm, "undecided")
    at = state.get("at", {}).get(fixed.arm)
    if at is None:  # never looked at, or a state from before the looks were recorded
        looked = [x for x in state.get("looks", []) if fixed.arm in x.get("arms", [])]
        return replace(fixed, label=label, equivalent=label == "equivalent", shown="",
                       p_holm=math.nan, p_tost_holm=math.nan, p_beyond_holm=math.nan,
                       alpha=float(looked[-1]["alpha"]) if looked else 0.0,
                       look=int(looked[-1]["n"]) if looked else 0)
    def num(key: str) -> float:
        v = at.get(key)
        return math.nan if v is None else float(v)

    return replace(fixed, label=label, equivalent=label == "equivalent",
                   shown=str(at.get("shown", "")), p_holm=num("p_holm"),
                   p_tost_holm=num("p_tost_holm"), p_beyond_holm=num("p_beyond_holm"),
                   alpha=num("alpha"), look=int(at["n"]))


# --------------------------------------------------------------------------- power


def sd_diff_from(sd: float, rho: float = 0.0) -> float:
    """sd of a paired difference from one run's sd and the pair correlation: sd sqrt(2(1-rho))."""
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [-1, 1], got {rho!r}")
    return sd * math.sqrt(2.0 * (1.0 - rho))


_QUANTILES = 256  # quadrature points over the sampling distribution of an estimated sd


def _sd_ratios(sd_df: float) -> np.ndarray:
    """Quantiles of s / sigma for an sd estimated on ``sd_df`` degrees of freedom (midpoints)."""
    q = (np.arange(_QUANTILES) + 0.5) / _QUANTILES
    return np.sqrt(st.chi2.ppf(q, sd_df) / sd_df)


def power_paired(effect: float, sd_diff: float, n: int, arms: int = 1, alpha: float = ALPHA,
                 sd_df: float = math.inf) -> float:
    """Power of the two-sided paired t test at ``alpha / arms`` for a true mean difference.

    ``sd_df`` finite: ``sd_diff`` is itself an estimate on that many degrees of freedom and
    ``effect`` a multiple of it (as a stated MDE is), so the power is averaged over what the
    true sd may be given the estimate (s / sigma ~ sqrt(chi2(df) / df)).
    """
    if arms < 1:
        raise ValueError(f"arms must be >= 1, got {arms!r}")
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n!r}")
    if sd_diff <= 0 or math.isnan(sd_diff):
        return math.nan
    df = float(n - 1)
    crit = st.t.ppf(1.0 - alpha / arms / 2.0, df)
    ncp = abs(effect) / sd_diff * math.sqrt(n)
    ncps = ncp * (_sd_ratios(sd_df) if math.isfinite(sd_df) else np.ones(1))
    return float(np.mean(st.nct.sf(crit, df, ncps) + st.nct.sf(crit, df, -ncps)))


def mde_paired(sd_diff: float, n: int, arms: int = 1, alpha: float = ALPHA,
               power: float = 0.8, sd_df: float = math.inf) -> float:
    """Smallest true mean difference the paired test finds with ``power`` at n pairs.

    ``sd_diff`` is the sd of paired differences (a pilot's, or ``NoiseFloor.sd_diff``), never
    one arm's sd: for uncorrelated pairs that understates it by sqrt(2). With several arms the
    test runs at ``alpha / arms`` (the first Holm step). ``sd_df``: the degrees of freedom of
    ``sd_diff`` when it is an estimate (pilot pairs - 1, or ``NoiseFloor.df``); the MDE is then
    widened so that the power averaged over the estimate's error is ``power`` (a 5-pair pilot
    taken at face value gives ~0.68 instead of 0.80).
    """
    if arms < 1:
        raise ValueError(f"arms must be >= 1, got {arms!r}")
    if math.isnan(sd_diff):
        return math.nan
    if not math.isfinite(sd_df):
        return stats.min_detectable_effect(sd_diff, n, alpha=alpha / arms, power=power,
                                           paired=True)
    stats._check_power_args(sd_diff, alpha, power)
    if sd_diff == 0:
        return 0.0
    return sd_diff * _unit_mde_averaged(n, arms, alpha, power, float(sd_df))


@lru_cache(maxsize=4096)
def _unit_mde_averaged(n: int, arms: int, alpha: float, power: float, sd_df: float) -> float:
    """:func:`mde_paired` for an sd of differences of 1 (the power depends on effect / sd only,
    so the MDE scales with the sd): solved once per design, not once per verdict."""

    def gap(effect: float) -> float:
        return power_paired(effect, 1.0, n, arms, alpha, sd_df) - power

    hi = 1.0
    while gap(hi) < 0.0:
        hi *= 2.0
        if hi > 1e6:  # the average power cannot reach the target (tiny df)
            return math.inf
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-12, maxiter=200))


def seeds_needed_paired(sd_diff: float, effect: float, arms: int = 1, alpha: float = ALPHA,
                        power: float = 0.8, max_n: int = 1000, sd_df: float = math.inf) -> int:
    """Pairs needed to find ``effect`` with ``power`` (paired test at ``alpha / arms``).

    ``sd_df`` as in :func:`mde_paired`. Returns ``max_n`` when even that many do not reach it.
    """
    if arms < 1:
        raise ValueError(f"arms must be >= 1, got {arms!r}")
    if not math.isfinite(sd_df):
        return stats.seeds_needed(sd_diff, effect, alpha=alpha / arms, power=power, paired=True,
                                  max_n=max_n)
    stats._check_power_args(sd_diff, alpha, power)
    if sd_diff == 0:
        return 2 if effect else max_n

    return stats.first_n_reaching(
        lambda n: power_paired(effect, sd_diff, n, arms, alpha, sd_df) >= power, max_n)


@lru_cache(maxsize=4096)
def _unit_mde(n: int, arms: int, alpha: float, power: float) -> float:
    """MDE of the paired test at n pairs for an sd of differences of 1 (it scales with sd)."""
    return stats.min_detectable_effect(1.0, n, alpha=alpha / arms, power=power, paired=True)


def design_pairs(sd_diff: float, effect: float, arms: int = 1, sd_df: float = math.inf,
                 alpha: float = ALPHA, power: float = 0.8, confidence: float = SD_CONFIDENCE,
                 max_n: int = 1000) -> int:
    """Pairs a design needs to find ``effect`` (declared or predicted, never an observed
    difference) with ``power`` (paired test at ``alpha / arms``), even if the true sd of
    differences is as large as the upper ``confidence`` bound of ``sd_diff`` (an estimate on
    ``sd_df`` degrees of freedom; infinite: known).

    With probability ``confidence`` over the estimate's error the design has at least
    ``power``. (Taken at face value, a floor on 4-8 df gave designs of mean power ~0.74 and a
    third of them below 0.7.) Equals ``seeds_needed_paired`` at that upper bound; ``max_n``
    when even that many do not reach it (effect 0 included); nan sd: ``max_n``.
    """
    if arms < 1:
        raise ValueError(f"arms must be >= 1, got {arms!r}")
    upper = sd_bounds(sd_diff, sd_df, confidence)[1]
    if math.isnan(upper) or not effect or not math.isfinite(effect):
        return max_n
    stats._check_power_args(upper, alpha, power)
    if upper == 0:
        return 2
    # Power at a fixed effect rises with n exactly when the MDE at n falls below the effect.
    return stats.first_n_reaching(
        lambda n: upper * _unit_mde(n, arms, alpha, power) <= abs(effect), max_n)


# --------------------------------------------------------------------------- sequential


def spent_by(n: int, n_max: int, alpha: float = ALPHA, rho: float = SPEND_RHO) -> float:
    """Cumulative alpha the spending function allows by the look at n of n_max pairs."""
    return alpha * min(1.0, n / n_max) ** rho


def new_sequential_state(arms: Sequence[str], n_max: int, alpha: float = ALPHA,
                         rho: float = SPEND_RHO) -> dict[str, Any]:
    """Fresh state of a sequential decision: nothing spent, every arm undecided (JSON-safe)."""
    stats._check_prob("alpha", alpha)
    if n_max < 2:
        raise ValueError(f"n_max must be >= 2, got {n_max!r}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho!r}")
    return {"version": STATE_VERSION, "alpha": alpha, "rho": rho, "n_max": int(n_max),
            "looks": [], "spent": {a: 0.0 for a in arms},
            "decided": {a: "undecided" for a in arms}, "at": {}}


def look_alpha(state: Mapping[str, Any], n: int) -> float:
    """Alpha this look may spend on each undecided arm, given what earlier looks spent."""
    done = state["looks"]
    before = spent_by(done[-1]["n"], state["n_max"], state["alpha"], state["rho"]) if done else 0.0
    return max(0.0, spent_by(n, state["n_max"], state["alpha"], state["rho"]) - before)


def planned_alphas(state: Mapping[str, Any], looks: Sequence[int]) -> list[float]:
    """The alpha each planned look (pairs per arm) will spend, given what the state's looks
    spent already: what `airlab decide` prints before it starts (0 for a look at or below
    the last one done, or past n_max)."""
    done = [dict(x) for x in state["looks"]]
    out = []
    for n in looks:
        last = done[-1]["n"] if done else 0
        if n <= last or last >= state["n_max"]:
            out.append(0.0)
            continue
        step = look_alpha({**state, "looks": done}, n)
        out.append(step)
        done.append({"n": n, "alpha": step, "arms": []})
    return out


def sequential_look(state: Mapping[str, Any], baseline: Samples, arms: Mapping[str, Samples],
                    direction: str = "minimize", margin: float = math.nan,
                    sd_floor: float = 0.0, margin_upper: float = math.nan
                    ) -> tuple[dict[str, str], dict[str, Any]]:
    """One interim look: decisions for every arm and the new state (the old one is not changed).

    The look spends ``alpha * ((n/n_max)**rho - (n_prev/n_max)**rho)`` on the undecided arms,
    Holm across them, for equivalence, better/worse and a gain beyond ``margin_upper``
    (default ``margin``), with the labels of :func:`label_batch`. Decided arms keep their
    label. ``state["at"][arm]`` keeps the tests of the last look that tested the arm (for a
    decided arm, the look that decided it), which :func:`sequential_decision` turns into the
    stored decision. A call with no more pairs than the last look (a rerun) or after n_max
    spends nothing and returns the stored decisions, so running again never restarts alpha.
    """
    sign = stats._sign_toward_improvement(direction)
    upper = margin if math.isnan(margin_upper) else margin_upper
    new = {**state, "looks": [dict(x) for x in state["looks"]], "spent": dict(state["spent"]),
           "decided": dict(state["decided"]),
           "at": {k: dict(v) for k, v in state.get("at", {}).items()}}
    for a in arms:
        new["spent"].setdefault(a, 0.0)
        new["decided"].setdefault(a, "undecided")
    open_arms = [a for a in arms if new["decided"][a] == "undecided"]
    diffs = {a: _diffs(baseline, arms[a]) for a in open_arms}
    n = min((d.size for d in diffs.values()), default=0)
    last = new["looks"][-1]["n"] if new["looks"] else 0
    if not open_arms or n < 2 or n <= last or last >= new["n_max"]:
        return dict(new["decided"]), new
    step = look_alpha(new, n)
    # Every open arm is tested at n pairs (the common seeds), so the look is one family.
    d = np.stack([diffs[a][:n] for a in open_arms])
    mean = d.mean(axis=-1)
    nan = np.full(len(d), np.nan)
    ph = holm_batch(paired_p_batch(d, sd_floor))
    pth = holm_batch(tost_p_batch(d, margin, sd_floor)) if margin > 0 else nan
    pbh = holm_batch(beyond_p_batch(d, upper, sign, sd_floor)) if upper > 0 else nan
    codes = label_batch(mean, ph, pth, sign, step)
    shown = shown_batch(mean, ph, sign, step)
    for i, a in enumerate(open_arms):
        new["spent"][a] += step
        new["decided"][a] = LABELS[int(codes[i])]
        # NaN is not JSON: a test that could not run is stored as None and read back as nan.
        new["at"][a] = {"n": int(n), "alpha": step, "shown": SHOWN[int(shown[i])],
                        **{k: None if math.isnan(float(v[i])) else float(v[i])
                           for k, v in (("p_holm", ph), ("p_tost_holm", pth),
                                        ("p_beyond_holm", pbh))}}
    new["looks"].append({"n": int(n), "alpha": step, "arms": open_arms})
    return dict(new["decided"]), new
