"""Calibrate the decision rules by simulation on synthetic seed results with known true effects.

Every rule of airlab.analysis.decisions and the time-to-target rule of
airlab.analysis.efficiency is run (vectorised over trials, through the same batch functions the
lab uses) at n = 3, 5, 10 seeds and 1-4 arms, with uncorrelated (rho = 0) and correlated
(rho = 0.7: baseline and arm share the seed) pairs; the rubric is run end to end, trial by
trial, through the pipeline's own ``compare.apply_decisions`` and ``validate.rate`` on
synthetic loss curves. It prints the tables and writes docs/decision_rules.md with them and
the rules in words.

    .venv/bin/python benchmarks/sim_rules.py            # ~10 minutes on one core
    .venv/bin/python benchmarks/sim_rules.py --trials 2000 --rubric-trials 300 --no-write
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as st

from airlab.analysis import decisions as D
from airlab.analysis import efficiency as E
from airlab.analysis import stats as S
from airlab.analysis.compare import Analysis, ArmRow, RunFacts, apply_decisions
from airlab.calibrate import DEFAULT_SEEDS
from airlab.validate import rate as rubric

NS = (3, 5, 10)
ARMS = (1, 2, 3, 4)
RHOS = (0.0, 0.7)
ALPHA = D.ALPHA
FLOOR_RUNS = DEFAULT_SEEDS  # the default A/A noise floor: 5 + 5 runs on disjoint seeds (df 8)
OLD_FLOOR_RUNS = 3  # the previous default (3 + 3, df 4)
PILOT = 5  # pairs in the pilot that states the MDE
DOC = Path(__file__).resolve().parents[1] / "docs" / "decision_rules.md"


def seeds(rng: np.random.Generator, trials: int, m: int, n: int, rho: float,
          effect: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Baseline (T, n) and arms (T, m, n) with unit sd; corr(arm, baseline) = rho per seed."""
    b = rng.standard_normal((trials, n))
    e = rng.standard_normal((trials, m, n))
    a = rho * b[:, None, :] + math.sqrt(1.0 - rho**2) * e
    eff = np.asarray(effect, dtype=np.float64)
    return b, a + (eff[..., None] if eff.ndim else eff)


def floor_sd(rng: np.random.Generator, trials: int, runs: int = FLOOR_RUNS) -> np.ndarray:
    """One-run sd measured by an A/A noise floor of ``runs`` + ``runs`` runs (true sd 1)."""
    x = rng.standard_normal((trials, 2, runs))
    return np.sqrt(x.var(axis=-1, ddof=1).mean(axis=-1))


def margin_of(sd: np.ndarray, df: float) -> np.ndarray:
    """The rule's margin (decisions.default_margin, linear in the sd) for measured sds."""
    return D.default_margin(1.0, df) * np.asarray(sd)


def rate(x: np.ndarray | np.bool_) -> float:
    return float(np.mean(x))


def kept_any(d: np.ndarray, margin: np.ndarray | float) -> np.ndarray:
    """Any arm quality kept under the rules (TOST + Holm first, paired t + Holm, a shown loss
    never kept), as ``decisions.decide`` labels it: (T, m, n) differences -> (T,)."""
    ph = D.holm_batch(D.paired_p_batch(d))
    pth = D.holm_batch(D.tost_p_batch(d, margin))
    mean = d.mean(-1)
    lab = D.label_batch(mean, ph, pth, -1.0, ALPHA)
    kept = D.kept_batch(lab, D.shown_batch(mean, ph, -1.0, ALPHA))
    return np.asarray(kept.any(-1))


def kept_old(d: np.ndarray, margin: np.ndarray | float) -> np.ndarray:
    """The previous rule: kept = significantly better or TOST equivalent, whatever the paired
    test says (a shown loss inside the margin counted as kept)."""
    ph = D.holm_batch(D.paired_p_batch(d))
    pth = D.holm_batch(D.tost_p_batch(d, margin))
    better = (ph < ALPHA) & (d.mean(-1) < 0)
    out: np.ndarray = (better | (pth < ALPHA)).any(-1)
    return out


# --------------------------------------------------------------------------- fixed n


def fixed_n(rng: np.random.Generator, trials: int) -> list[dict[str, float]]:
    """A/A false better/worse; false "quality kept" at true 1 and 2 sd worsenings."""
    df = 2.0 * FLOOR_RUNS - 2
    rows = []
    for n in NS:
        for m in ARMS:
            for rho in RHOS:
                b, a = seeds(rng, trials, m, n, rho)
                d = a - b[:, None, :]
                ph = D.holm_batch(D.paired_p_batch(d))
                lab = D.label_batch(d.mean(-1), ph, np.full(ph.shape, np.nan), -1.0, ALPHA)
                aa = rate((lab <= 1).any(-1))
                # Seeds' rule alone (as the seeds defined it), any arm, A/A: reported beside.
                rule = np.zeros((trials, m), dtype=bool)
                for j in range(m):
                    imp = b.mean(-1) - a[:, j].mean(-1)
                    sd_b = b.std(-1, ddof=1)
                    pooled = np.sqrt((b.var(-1, ddof=1) + a[:, j].var(-1, ddof=1)) / 2)
                    rule[:, j] = (imp > 2 * sd_b) & (imp / pooled >= 0.5)
                seeds_rule = rate(rule.any(-1))
                out = {"n": n, "arms": m, "rho": rho, "aa_better_worse": aa,
                       "aa_seeds_rule": seeds_rule}
                # Every arm truly k sd worse (all nulls true: the worst case), the margin from
                # a 5 + 5-run floor by the rule; and the old rule (2 sd of a 3 + 3-run floor
                # at face value, a shown loss inside the margin kept).
                fsd = floor_sd(rng, trials)[:, None]
                margin = margin_of(fsd, df)
                old_margin = 2.0 * floor_sd(rng, trials, OLD_FLOOR_RUNS)[:, None]
                for k in (1.0, 2.0):
                    bk, ak = seeds(rng, trials, m, n, rho, effect=k)
                    dk = ak - bk[:, None, :]
                    out[f"kept_{k:g}"] = rate(kept_any(dk, margin))
                    out[f"kept_{k:g}_old"] = rate(kept_old(dk, old_margin))
                    if k == 1.0:
                        # Provisional margin: the experiment's own baseline sd, df n - 1.
                        own = margin_of(bk.std(-1, ddof=1), n - 1)[:, None]
                        out["kept_1_own"] = rate(kept_any(dk, own))
                        # Why 1 sd at the lower bound: the same floor's sd at face value,
                        # as 2 sd and as 1 sd (a shown loss never kept in both).
                        out["kept_1_2sd"] = rate(kept_any(dk, 2.0 * fsd))
                        out["kept_1_face"] = rate(kept_any(dk, fsd))
                # Equivalence found when the arms truly equal the baseline (per arm).
                pth0 = D.holm_batch(D.tost_p_batch(d, margin))
                out["equiv_found_aa"] = rate((pth0 < ALPHA).mean(-1))
                rows.append(out)
    return rows


def floor_sizes(rng: np.random.Generator, trials: int) -> list[dict[str, float]]:
    """What the default floor's size buys: the margin and design factors, the worst false
    "kept" at a true 1 sd worsening (one arm, n = 3, 5, 10, rho 0 and 0.7) and the A/A
    equivalence found at n = 5 and 10 (rho 0.7)."""
    rows = []
    for runs in (3, 5, 10):
        df = 2.0 * runs - 2
        worst = 0.0
        found: dict[int, float] = {}
        for n in NS:
            for rho in RHOS:
                margin = margin_of(floor_sd(rng, trials, runs), df)[:, None]
                b, a = seeds(rng, trials, 1, n, rho, effect=1.0)
                worst = max(worst, rate(kept_any(a - b[:, None, :], margin)))
                if rho == 0.7:
                    b0, a0 = seeds(rng, trials, 1, n, rho)
                    found[n] = rate(kept_any(a0 - b0[:, None, :], margin))
        lo, hi = D.sd_bound_factors(df)
        rows.append({"runs": runs, "df": df, "margin_factor": float(lo),
                     "design_factor": float(hi), "kept_1_worst": worst,
                     "aa_kept_5": found[5], "aa_kept_10": found[10]})
    return rows


# --------------------------------------------------------------------------- power


def power(rng: np.random.Generator, trials: int) -> list[dict[str, float]]:
    """Power at the stated MDE: one arm at the MDE, the others null, Holm across arms."""
    rows = []
    for n in NS:
        for m in ARMS:
            k = D.mde_paired(1.0, n, arms=m)  # MDE per unit sd of the differences
            k_pilot = D.mde_paired(1.0, n, arms=m, sd_df=PILOT - 1)  # widened for the estimate
            k_old = S.min_detectable_effect(1.0, n, paired=True)  # the old rule (no arms)
            for rho in RHOS:
                sd_d = math.sqrt(2 * (1 - rho))
                out: dict[str, float] = {"n": n, "arms": m, "rho": rho}
                # (a) sd of differences known (a large calibration); (b) from a 5-pair pilot
                # with the same pairing; (c) the old rule: the baseline's sd as if paired.
                pb, pa = seeds(rng, trials, 1, PILOT, rho)
                pilot = (pa[:, 0] - pb).std(-1, ddof=1)
                old = pb.std(-1, ddof=1)
                for key, mde in (("known", np.full(trials, k * sd_d)), ("pilot", k_pilot * pilot),
                                 ("pilot_raw", k * pilot),
                                 ("old", k_old * old)):
                    eff = np.zeros((trials, m))
                    eff[:, 0] = -mde  # an improvement of a loss
                    b, a = seeds(rng, trials, m, n, rho, effect=eff)
                    d = a - b[:, None, :]
                    ph = D.holm_batch(D.paired_p_batch(d))
                    lab = D.label_batch(d.mean(-1), ph, np.full(ph.shape, np.nan), -1.0, ALPHA)
                    out[f"power_{key}"] = rate(lab[:, 0] == 0)
                rows.append(out)
    return rows


def design(rng: np.random.Generator, trials: int) -> list[dict[str, float]]:
    """True power of designs sized from a floor's estimated sd of differences (truth 1) for a
    declared effect: at face value (the old Architect) and by ``decisions.design_pairs``
    (the sd's upper 80% bound). Mean power and the share of designs below 0.7."""
    rows = []
    grid = np.arange(2, 1001)
    for runs in (OLD_FLOOR_RUNS, FLOOR_RUNS):
        df = 2.0 * runs - 2
        for arms in (1, 3):
            unit = np.array([D._unit_mde(int(k), arms, ALPHA, 0.8) for k in grid])
            for effect in (0.8, 1.5, 2.5):
                s = np.sqrt(rng.chisquare(df, trials) / df)  # estimated sd of differences
                out: dict[str, float] = {"runs": runs, "df": df, "arms": arms,
                                         "effect": effect}
                for key, sd in (("face", s), ("design", s * D.sd_bound_factors(df)[1])):
                    # The smallest n whose MDE at this sd is <= the effect (power is monotone
                    # in n), as stats.first_n_reaching finds it; checked against it below.
                    ok = sd[:, None] * unit[None, :] <= effect
                    n = np.where(ok.any(-1), grid[np.argmax(ok, axis=-1)], grid[-1])
                    if key == "design":
                        for i in range(5):
                            assert n[i] == D.design_pairs(float(s[i]), effect, arms, df)
                    power = {int(k): D.power_paired(effect, 1.0, int(k), arms)
                             for k in np.unique(n)}
                    pw = np.array([power[int(k)] for k in n])
                    out[f"{key}_mean"] = float(pw.mean())
                    out[f"{key}_below"] = rate(pw < 0.7)
                    out[f"{key}_n"] = float(np.median(n))
                rows.append(out)
    return rows


# --------------------------------------------------------------------------- time-to-target


def curves(rng: np.random.Generator, shape: tuple[int, ...], evals: int = 30,
           offset: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loss curves (..., evals) and their train_seconds: a power-law decay to ~1.8 nats.

    Per run: a quality offset (sd 0.01 nats, the seed noise of the final loss; or ``offset``),
    a learning speed (tau scaled by exp(N(0, 0.05))) and a throughput (seconds scaled by
    exp(N(0, 0.03))); per evaluation: validation noise (sd 0.003 nats).
    """
    s = np.arange(1, evals + 1) / evals
    tau = 0.05 * np.exp(0.05 * rng.standard_normal(shape))[..., None]
    loss = 1.5 + 2.5 * (1.0 + s / tau) ** -0.7
    q = 0.01 * rng.standard_normal(shape) if offset is None else offset
    loss = loss + q[..., None]
    loss = loss + 0.003 * rng.standard_normal((*shape, evals))
    secs = 100.0 * s * np.exp(0.03 * rng.standard_normal(shape))[..., None]
    return loss, secs


def interval(logs: np.ndarray, min_pairs: int) -> tuple[np.ndarray, ...]:
    """geo_ratio's t interval on the log ratios, vectorised over trials (nan: not reached)."""
    ok = ~np.isnan(logs)
    k = ok.sum(-1)
    mean = np.nansum(logs, -1) / np.maximum(k, 1)
    var = np.nansum((logs - mean[..., None]) ** 2, -1) / np.maximum(k - 1, 1)
    half = st.t.ppf(0.975, np.maximum(k - 1, 1)) * np.sqrt(var / np.maximum(k, 1))
    return mean - half, mean + half, k >= min_pairs, k


def ttt(rng: np.random.Generator, trials: int) -> list[dict[str, float]]:
    """A/A coverage of ratio 1 by the time-to-target interval (per arm, so any number of arms).

    Targets: the rule without a floor (leave-one-seed-out, slack from the other seeds' sd at
    its upper bound), with a noise floor of 5 + 5 other baseline runs, the previous rule
    (slack from all the baseline's finals, pair i's own included) and the oldest (the
    baseline's own final value, an interval from 2 pairs).
    """
    rows = []
    for n in NS:
        bl, bs = curves(rng, (trials, n))
        al, as_ = curves(rng, (trials, n))
        fl, _ = curves(rng, (trials, 2, FLOOR_RUNS))
        fsd = np.sqrt(fl[..., -1].var(axis=-1, ddof=1).mean(axis=-1))[:, None]
        out: dict[str, float] = {"n": n}
        fb = bl[..., -1]
        for key in ("loo", "floor", "leak", "own"):
            if key == "loo":
                target = E.loo_targets(fb, "minimize")  # (T, n)
            elif key == "floor":
                target = E.loo_targets(fb, "minimize", floor_sd=0.0) + E.SLACK_SIGMAS * fsd
            elif key == "leak":  # the previous slack: 3 sd of all finals, pair i's included
                others = (fb.sum(-1, keepdims=True) - fb) / (n - 1)
                target = others + E.SLACK_SIGMAS * fb.std(-1, ddof=1, keepdims=True)
            else:  # the old rule: the baseline's own final value
                target = fb
            bc = E.crossing_batch(bl, bs, target, "minimize")
            ac = E.crossing_batch(al, as_, target, "minimize")
            lo, hi, has, k = interval(np.log(bc / ac), E.MIN_PAIRS if key != "own" else 2)
            out[f"{key}_coverage"] = rate(((lo <= 0) & (hi >= 0))[has])
            out[f"{key}_low_above_1"] = rate((lo > 0)[has])
            out[f"{key}_high_below_1"] = rate((hi < 0)[has])
            out[f"{key}_with_interval"] = rate(has)
            out[f"{key}_reached"] = float(k.mean() / n)
        rows.append(out)
    return rows


# --------------------------------------------------------------------------- sequential


def sequential(d: np.ndarray, looks: list[int], margin: np.ndarray | float, n_max: int,
               sign: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`decisions.sequential_look` over trials: final label codes (T, m) and
    the pairs at which `airlab decide` stops (T,): the first look where every arm is decided,
    else the last.

    d: (T, m, N) differences; the same spending, Holm over undecided arms, terminal labels.
    """
    t, m, _ = d.shape
    lab = np.full((t, m), 3, dtype=np.int8)
    stop = np.full(t, looks[-1])
    stopped = np.zeros(t, dtype=bool)
    spent = 0.0
    for n in looks:
        step = D.spent_by(n, n_max) - spent
        spent += step
        open_ = lab == 3
        dn = d[..., :n]
        p = np.where(open_, D.paired_p_batch(dn), np.nan)
        pt = np.where(open_, D.tost_p_batch(dn, margin), np.nan)
        new = D.label_batch(dn.mean(-1), D.holm_batch(p), D.holm_batch(pt), sign, step)
        lab = np.where(open_ & ~stopped[:, None], new, lab)
        done = (lab != 3).all(-1) & ~stopped
        stop = np.where(done, n, stop)
        stopped |= done
    return lab, stop


def check_sequential_matches(rng: np.random.Generator) -> None:
    """The vectorised loop above gives what the stored-state function gives (20 trials)."""
    looks = [3, 5, 7, 9, 10]
    for trial in range(20):
        b, a = seeds(rng, 1, 3, 10, 0.5, effect=np.array([[-1.5, 0.0, 1.0]]))
        d = a - b[:, None, :]
        margin = 2.0
        want = sequential(d, looks, margin, 10)[0][0]
        state = D.new_sequential_state(["x", "y", "z"], 10)
        for n in looks:
            dec, state = D.sequential_look(state, b[0, :n], {k: a[0, j, :n] for j, k in
                                                             enumerate("xyz")}, margin=margin)
            if all(v != "undecided" for v in dec.values()):
                break  # `airlab decide` stops at the first decisive look
        got = [D.LABELS.index(dec[k]) for k in "xyz"]
        assert got == want.tolist(), (trial, got, want)


def fixed_at(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Any false better/worse of the fixed-n paired test (Holm, alpha 0.05) on the first
    ``n[t]`` pairs of trial t: what the old `decide` stored at its stopping point."""
    out = np.zeros(d.shape[0], dtype=bool)
    for k in np.unique(n):
        sel = n == k
        ph = D.holm_batch(D.paired_p_batch(d[sel][..., :k]))
        out[sel] = (ph < ALPHA).any(-1)
    return out


def seq_sim(rng: np.random.Generator, trials: int) -> list[dict[str, float]]:
    """A/A: any better/worse over looks 3, 5, 7, 9, 10, as the verdict now stores it (the
    sequential labels) and as it stored it before (a fixed-n test at the stopping point);
    "run 3 seeds, then decide"; false equivalence at 3 sd."""
    looks, n_max = [3, 5, 7, 9, 10], 10
    rows = []
    for m in ARMS:
        for rho in RHOS:
            margin = margin_of(floor_sd(rng, trials), 2.0 * FLOOR_RUNS - 2)[:, None]
            b, a = seeds(rng, trials, m, n_max, rho)
            d = a - b[:, None, :]
            lab, stop = sequential(d, looks, margin, n_max)
            # "Run 3 seeds, then decide": a fixed-n verdict at 3 seeds (alpha 0.05), then
            # `decide` from 3 seeds on; the stored verdict is the last (the sequential one),
            # but a user who also acted on the first ran two tests.
            first = fixed_at(d, np.full(trials, 3))
            b3, a3 = seeds(rng, trials, m, n_max, rho, effect=3.0)
            lab3, _ = sequential(a3 - b3[:, None, :], looks, margin, n_max)
            kept3 = (lab3 == 2) | (lab3 == 0)
            rows.append({"arms": m, "rho": rho, "aa_any_better_worse": rate((lab <= 1).any(-1)),
                         "aa_old_stored": rate(fixed_at(d, stop)),
                         "aa_then_either": rate(first | (lab <= 1).any(-1)),
                         "aa_equivalent": rate((lab == 2).mean(-1)),
                         "false_equiv_3sd": rate(kept3.any(-1))})
    return rows


# --------------------------------------------------------------------------- the rubric


SCENARIOS = (  # name, true change of the final loss in its sds (+: worse), cost factor
    ("A/A", 0.0, 1.0),
    ("1 sd worse, 2.5x cheaper", 1.0, 2.5),
    ("2 sd worse, 2.5x cheaper", 2.0, 2.5),
    ("3 sd worse, 2.5x cheaper", 3.0, 2.5),
    ("win: same quality, 2.5x cheaper", 0.0, 2.5),
    ("win: 2 sd better, same cost", -2.0, 1.0),
)
FACTS = RunFacts(frozenset({("sim", "cpu", "cpu")}), frozenset({("tokens", 1e6)}),
                 frozenset({"shakespeare"}))
SEEDS = [42, 137, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


def final_sd(rng: np.random.Generator) -> float:
    """The sd of a run's final loss on these curves (offset, speed and evaluation noise)."""
    loss, _ = curves(rng, (200_000,))
    return float(loss[:, -1].std(ddof=1))


def rated(base: np.ndarray, arm: np.ndarray, ratio: tuple[float, float, float], reached: int,
          floor: D.NoiseFloor) -> int:
    """One simulated experiment through the pipeline's analysis and rubric: per-seed finals
    of the baseline and one arm, its time-to-target ratio, and the stored noise floor."""
    n = base.size
    seeds_ = SEEDS[:n]
    spec = {"name": "sim", "baseline": {"name": "base"}, "arms": [{"name": "arm"}],
            "seeds": seeds_, "budget": {"tokens": 1e6}, "dataset": "shakespeare",
            "metric": "val_loss", "direction": "minimize"}
    rows = [ArmRow(k, k == "base", seeds_, v.tolist(), n, n, 0, [], S.summarize(v),
                   means={"train_seconds": 100.0}) for k, v in (("base", base), ("arm", arm))]
    a = Analysis("sim", "val_loss", "minimize", spec, rows, floors={"val_loss": floor})
    apply_decisions(a)
    nan3 = (math.nan, math.nan, math.nan)
    rows[1].efficiency = E.ArmEfficiency("arm", n, reached, {}, {
        "train_seconds": ratio, "flops": nan3, "energy_kwh_est": nan3})
    return rubric(a, FACTS).rating


def rubric_sim(rng: np.random.Generator, trials: int) -> list[dict[str, Any]]:
    """The rating distribution of simulated experiments, end to end: loss curves, finals as
    the metric, the noise floor (5 + 5 baseline runs), time-to-target by the rule's targets,
    then compare.apply_decisions and validate.rate, trial by trial. One arm; rho is the
    correlation of a seed's quality offset between the baseline's run and the arm's."""
    sigma = final_sd(rng)
    rows = []
    for n in NS:
        for rho in RHOS:
            for name, shift, cheaper in SCENARIOS:
                zb = rng.standard_normal((trials, n))
                za = rho * zb + math.sqrt(1 - rho**2) * rng.standard_normal((trials, n))
                bl, bs = curves(rng, (trials, n), offset=0.01 * zb)
                al, as_ = curves(rng, (trials, n), offset=0.01 * za + shift * sigma)
                as_ = as_ / cheaper
                fl, _ = curves(rng, (trials, 2, FLOOR_RUNS))
                floors = [D.noise_floor(x[0], x[1]) for x in fl[..., -1]]
                fsd = np.array([f.sd for f in floors])[:, None]
                target = E.loo_targets(bl[..., -1], "minimize", floor_sd=0.0) + (
                    E.SLACK_SIGMAS * fsd)  # the floor's slack, as analyze passes it
                ratios = (E.crossing_batch(bl, bs, target, "minimize")
                          / E.crossing_batch(al, as_, target, "minimize"))
                ratings = np.empty(trials, dtype=int)
                for t in range(trials):
                    r = ratios[t]
                    g = E.geo_ratio(r[np.isfinite(r)].tolist(), min_pairs=E.MIN_PAIRS)
                    ratings[t] = rated(bl[t, :, -1], al[t, :, -1], g,
                                       int(np.isfinite(r).sum()), floors[t])
                rows.append({"n": n, "rho": rho, "scenario": name,
                             "r7": rate(ratings >= 7), "r56": rate((ratings >= 5)
                                                                    & (ratings <= 6)),
                             "r14": rate(ratings <= 4), "mean": float(ratings.mean())})
    return rows


# --------------------------------------------------------------------------- output


def fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


RAW = {"n", "arms", "runs", "df"}  # integers
PLAIN = {"rho": "{:.1f}", "effect": "{:.1f}", "margin_factor": "{:.3f}",
         "design_factor": "{:.3f}", "face_mean": "{:.3f}", "design_mean": "{:.3f}",
         "face_n": "{:.0f}", "design_n": "{:.0f}", "mean": "{:.2f}"}


def table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for _, h in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = []
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r[k]
            cells.append(str(v) if isinstance(v, str) else str(int(v)) if k in RAW
                         else PLAIN[k].format(v) if k in PLAIN else fmt(v))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])


RULES = """\
## The rules

All decisions compare an arm with the baseline seed by seed (seed i of each arm is a pair;
a pair with a failed run is dropped). Overall alpha = 0.05.

* **Equivalent.** Two one-sided paired t tests (TOST) of the differences against -margin and
  +margin at alpha each; the TOST p-value is the larger one; Holm across arms. Decided
  first: a difference whose (1 - 2 alpha) interval lies wholly inside the margin is
  "equivalent" even when the paired test finds it too; it is then *negligible* (real, but
  smaller than the smallest effect that matters), never "better" or "worse". A difference
  that is merely not significant is "undecided", never equivalent.
* **Better / worse.** Otherwise, the two-sided paired t test of the differences arm -
  baseline; Holm across the arms of the experiment (family-wise error <= alpha over all
  arms). Significant in the good direction: "better"; in the bad direction: "worse". The
  seeds' rule (the mean improves by more than 2 sd of the baseline and Cohen's d >= 0.5) and
  d_z are reported beside the decision as the seeds defined them; they neither gate a label
  nor score a point. (As a gate the rule made a true 2 sd effect "better" only ~53% of the
  time even at n = 20.)
* **Quality kept.** "Better", or "equivalent" with no significant worsening: a loss the
  paired test finds is never kept or credited, however small. (Kept = better or equivalent
  let a truly 1 sd worse, 2.5x cheaper arm be rated publishable in 20-51% of simulations.)
* **Margin.** The spec's margin when declared: the smallest effect that matters, taken as
  exact. Else 1 sd of the metric at the *lower* 80% confidence bound of the noise floor's
  one-run sd (chi-square on the floor's df; A/A runs of the baseline on disjoint seed sets,
  5 + 5 by default, df 8: 0.852 sd). One sd because the rubric counts a 1 sd loss as a loss
  (a 2 sd margin kept such an arm in up to half the trials of a cell below, even with shown
  losses never kept); the lower bound because the floor is an estimate and a margin
  estimated too wide keeps real losses (1 sd at face value: just above 5% at n = 10, rho 0;
  the old 2 sd of a 3 + 3 floor at face value kept a true 2 sd worsening in 6-25%). Before a
  floor is measured, the same from the experiment's own baseline sd (df n - 1) serves as a
  provisional margin, reported as such (the rubric caps at 6 on it); with no margin at all,
  equivalence cannot be shown.
* **Zero spread.** Differences without spread (identical runs) have no t distribution: the
  test is undecidable (p = nan, "undecided", with a note) unless a noise floor is given, whose
  sd of differences then floors the observed one (which can only make the test conservative).
* **MDE.** From the sd of *paired differences* (a pilot of the same pairing, or the noise
  floor's sd x sqrt(2), an upper bound for seed-sharing pairs), at alpha / arms (the first
  Holm step) and power 0.8, on the noncentral t distribution; widened for an estimated sd
  (`sd_df`: pilot pairs - 1, or the floor's df) so that the power averaged over the
  estimate's error is 0.8.
* **Seeds needed and designs.** For a declared or predicted effect, never an observed one:
  the pairs that reach power 0.8 at alpha / arms even if the true sd of differences is as
  large as the *upper* 80% bound of its estimate (`decisions.design_pairs`; the Architect
  sizes its designs so). An undecided arm is told the pairs that find an effect the size of
  the margin (the smallest that matters), and never "treat it as no effect".
* **Time-to-target.** One rule for both arms: for seed pair i the target is the mean of the
  baseline's final value over the other seeds, loosened by 3 sd: the floor's one-run sd, else
  the other seeds' sd at its upper 80% bound (n - 2 df); neither run of pair i sets its own
  target, slack included (2 seeds and no floor: no target). A declared target replaces it.
  Each run's cost is the interpolated crossing of its own curve. Ratio = baseline cost / arm
  cost per pair where both reached; geometric mean with a 95% t interval on the logs only
  from 3 reached pairs on; the report gives the number of reached pairs.
* **Sequential decisions.** Looks at planned seed counts up to n_max. Alpha is spent as
  alpha x (n / n_max)^2 by the look at n pairs (printed before the first look: at 3, 5, 7,
  9, 10 of 10 that is 0.0045, 0.008, 0.012, 0.016, 0.0095); each look tests the undecided
  arms with Holm at the alpha spent at that look (by the union bound, any false decision over
  all looks and arms stays <= alpha whatever the correlation between looks). Decisions are
  terminal. The state (looks done, alpha spent per arm, decisions and the tests of the look
  that decided each arm) is a plain JSON dict in the store; a second call with no new pairs
  spends nothing. The stored verdict is the sequential decision (the rubric scores it at the
  deciding look's alpha), never a fixed-n test at the data-dependent stopping point.
* **Rubric evidence.** Only calibrated tests score: "better" (paired t, Holm, alpha), the
  same at alpha / 10 ("strong"), and the gain shown beyond the margin at its upper 80% bound
  (one-sided paired t, Holm). The full rubric is simulated end to end below.
* **Implausible runs.** A run the trusted measuring side flagged (`implausible` >= 1) keeps
  its arm, and every arm when it is the baseline's, from "better" or "equivalent": never
  kept, never credited, rated at most 4, the reasons in the critique. (Deterministic; tested
  with fixed inputs, not simulated.)
"""


def write_doc(res: dict[str, Any], trials: int, rubric_trials: int, seconds: float) -> str:
    fixed, pw, tt, sq = res["fixed"], res["power"], res["ttt"], res["seq"]
    fs, dz, rb = res["floors"], res["design"], res["rubric"]

    def span(rows: list[dict[str, Any]], key: str, **where: Any) -> str:
        xs = [r[key] for r in rows if not math.isnan(r[key])
              and all(r[k] == v for k, v in where.items())]
        return f"{fmt(min(xs))}-{fmt(max(xs))}"

    def rub(scenario: str, key: str = "r7") -> str:
        return span(rb, key, scenario=scenario)

    summary = [
        "## Summary (n = 3, 5, 10; 1-4 arms; rho = 0 and 0.7)",
        "",
        f"* A/A false 'better'/'worse', any arm: {span(fixed, 'aa_better_worse')} "
        "(target <= 5%; with one arm the paired t test's size is exactly 5% for normal "
        "errors, and Holm keeps it <= 5% over arms, so these scatter around 5% by the Monte "
        "Carlo se of 0.15 points).",
        f"* False 'quality kept', every arm truly 1 sd worse: {span(fixed, 'kept_1')}; "
        f"2 sd worse: {span(fixed, 'kept_2')} (target <= 5%; the old rule, 2 sd of a 3 + 3 "
        f"floor at face value and a shown loss kept: {span(fixed, 'kept_1_old')} at 1 sd, "
        f"{span(fixed, 'kept_2_old')} at 2 sd; a 2 sd margin with shown losses never kept "
        f"{span(fixed, 'kept_1_2sd')} at 1 sd, 1 sd at face value "
        f"{span(fixed, 'kept_1_face')}).",
        f"* The rubric, end to end ({rubric_trials} trials per cell, one arm): rated >= 7 "
        f"for A/A {rub('A/A')} (target <= 2.5%); truly 1 sd worse and 2.5x cheaper "
        f"{rub('1 sd worse, 2.5x cheaper')} (target <= 5%); 2 sd "
        f"{rub('2 sd worse, 2.5x cheaper')}; 3 sd {rub('3 sd worse, 2.5x cheaper')}; true "
        f"wins: same quality 2.5x cheaper {rub('win: same quality, 2.5x cheaper')}, 2 sd "
        f"better {rub('win: 2 sd better, same cost')}.",
        f"* Time-to-target A/A coverage: {span(tt, 'loo_coverage')} without a floor, "
        f"{span(tt, 'floor_coverage')} with one (target >= 95%, nominal 94.9% on these "
        f"curves); interval wholly above 1 {span(tt, 'loo_low_above_1')} against below 1 "
        f"{span(tt, 'loo_high_below_1')} (the previous slack, pair i's final included: "
        f"{span(tt, 'leak_low_above_1')} against {span(tt, 'leak_high_below_1')}).",
        f"* Power at the stated MDE: {span(pw, 'power_known')} with the sd known, "
        f"{span(pw, 'power_pilot')} from a {PILOT}-pair pilot (target 75-85%).",
        f"* Designs sized by `design_pairs` from a floor: mean power "
        f"{min(r['design_mean'] for r in dz):.3f}-{max(r['design_mean'] for r in dz):.3f}, "
        f"below 0.7 in {span(dz, 'design_below')} (taken at face value: mean "
        f"{min(r['face_mean'] for r in dz):.3f}-{max(r['face_mean'] for r in dz):.3f}, below "
        f"0.7 in {span(dz, 'face_below')}).",
        f"* Sequential A/A any decision over looks and arms, as the verdict stores it: "
        f"{span(sq, 'aa_any_better_worse')} (target <= 5%; the old stored fixed-n label at "
        f"the stopping point {span(sq, 'aa_old_stored')}); false kept at 3 sd "
        f"{span(sq, 'false_equiv_3sd')}.",
        "",
    ]
    parts = [
        "# Decision rules and their calibration",
        "",
        "Written by `benchmarks/sim_rules.py` (do not edit by hand; rerun it: "
        "`.venv/bin/python benchmarks/sim_rules.py`). Synthetic seed results with unit sd "
        "and known true effects; rho is the correlation between a baseline run and an arm's "
        f"run on the same seed. {trials} trials per cell (binomial se 0.15 points at 5%) in "
        f"the vectorised tables, {rubric_trials} per cell in the end-to-end rubric table "
        f"(se {100 * math.sqrt(0.025 * 0.975 / rubric_trials):.2f} points at 2.5%); run time "
        f"{seconds:.0f} s on one core.",
        "",
        *summary,
        RULES,
        "## Fixed n: false decisions",
        "",
        "A/A: probability of any false 'better' or 'worse' over the arms (target <= 5%) and "
        "the seeds' rule alone for comparison. Every arm truly 1 or 2 sd worse: probability "
        "that any arm is 'quality kept' (target <= 5%) by the rules (margin from a "
        f"{FLOOR_RUNS} + {FLOOR_RUNS}-run floor; a shown loss never kept), by the old rule "
        f"(2 sd of a {OLD_FLOOR_RUNS} + {OLD_FLOOR_RUNS}-run floor at face value, kept = "
        "better or equivalent), with the provisional margin from the experiment's own "
        "baseline sd, and, to show why the margin is 1 sd at the floor sd's lower bound, with "
        "the same floor's sd at face value as a 2 sd and as a 1 sd margin (a shown loss never "
        "kept in both). Last, how often equivalence is shown when arms equal the baseline (per "
        "arm: the price of a conservative margin; uncorrelated pairs at n = 3 rarely get "
        "there).",
        "",
        table(fixed, [("n", "n"), ("arms", "arms"), ("rho", "rho"),
                      ("aa_better_worse", "A/A better/worse"),
                      ("aa_seeds_rule", "A/A seeds' rule alone"),
                      ("kept_1", "kept, 1 sd worse"), ("kept_2", "kept, 2 sd worse"),
                      ("kept_1_old", "old rule, 1 sd"), ("kept_2_old", "old rule, 2 sd"),
                      ("kept_1_own", "provisional margin, 1 sd"),
                      ("kept_1_2sd", "2 sd margin, 1 sd"),
                      ("kept_1_face", "1 sd at face value, 1 sd"),
                      ("equiv_found_aa", "equivalent shown, A/A")]),
        "",
        "## The default noise floor",
        "",
        "Floors of r + r A/A runs (df 2r - 2): the margin as a multiple of the true sd at the "
        "median (the lower-bound factor), the factor designs put on the floor's sd (the upper "
        "bound), the worst false 'kept' at a true 1 sd worsening over n = 3, 5, 10 and rho = "
        "0, 0.7 (one arm; target <= 5%), and how often an A/A arm is shown kept at n = 5 and "
        "10 (rho 0.7). The error rate holds at any size; a larger floor buys equivalence "
        f"power and fewer seeds in every design. The default is {FLOOR_RUNS} + {FLOOR_RUNS}.",
        "",
        table(fs, [("runs", "runs per set"), ("df", "df"), ("margin_factor", "margin / sd"),
                   ("design_factor", "design sd factor"),
                   ("kept_1_worst", "worst kept, 1 sd worse"),
                   ("aa_kept_5", "A/A kept, n = 5"), ("aa_kept_10", "A/A kept, n = 10")]),
        "",
        "## Power at the stated MDE",
        "",
        "One arm truly better by the MDE stated by `mde_paired` (others null, Holm across "
        "arms), target 75-85%. known: the sd of differences known; pilot: estimated from a "
        f"{PILOT}-pair pilot with the same pairing, the MDE widened for the estimate's error "
        "(`sd_df`), and the same pilot taken at face value; old: the previous rule (the "
        "baseline's sd as if it were the sd of differences, no arms correction).",
        "",
        table(pw, [("n", "n"), ("arms", "arms"), ("rho", "rho"), ("power_known", "known sd"),
                   ("power_pilot", f"{PILOT}-pair pilot, sd_df=4"),
                   ("power_pilot_raw", "pilot at face value"), ("power_old", "old rule")]),
        "",
        "## Designs sized from a floor",
        "",
        f"{trials} floors per cell, each giving an estimated sd of differences (truth 1, df "
        "of an r + r floor); the design's pairs for a declared effect (in units of the true "
        "sd of differences) and its true power at that effect. face: the estimate at face "
        "value (the Architect before); design: `design_pairs` (upper 80% bound). Mean power, "
        "share of designs below power 0.7, median pairs.",
        "",
        table(dz, [("runs", "floor runs per set"), ("arms", "arms"), ("effect", "effect"),
                   ("face_mean", "face: mean power"), ("face_below", "face: < 0.7"),
                   ("face_n", "face: pairs"), ("design_mean", "design: mean power"),
                   ("design_below", "design: < 0.7"), ("design_n", "design: pairs")]),
        "",
        "## Time-to-target, A/A",
        "",
        "Synthetic loss curves (power-law decay to ~1.8 nats; per run a 0.01-nat quality "
        "offset, a learning-speed and a throughput factor; per evaluation 0.003-nat noise; 30 "
        "evaluations). Coverage of ratio 1 by the 95% interval over the trials that have one "
        "(target >= 95%; Monte Carlo se ~0.15 points), how often the interval lies wholly "
        "above 1 (arm 'faster') or below 1 (these two should match), the share of trials with "
        "an interval, and the share of pairs where both runs reached the target. rule: "
        "leave-one-seed-out target, slack 3 x the other seeds' sd at its upper 80% bound; "
        f"floor: the slack from a {FLOOR_RUNS} + {FLOOR_RUNS}-run noise floor; previous: the "
        "slack from all the baseline's finals (pair i's own included); oldest: the "
        "baseline's own final value (interval from 2 pairs). Per arm, so the same for 1-4 "
        "arms. With a fixed target the t interval on these curves covers 94.9% +- 0.1 "
        "(100,000 trials), i.e. at nominal. The other seeds' sd at face value (n - 2 df) "
        "left an interval in only 48% of trials at n = 3 (20,000 trials); its upper bound "
        "restores it.",
        "",
        table(tt, [("n", "n"), ("loo_coverage", "rule: coverage"),
                   ("loo_low_above_1", "above 1"), ("loo_high_below_1", "below 1"),
                   ("loo_with_interval", "with interval"), ("loo_reached", "pairs reached"),
                   ("floor_coverage", "floor: coverage"), ("floor_low_above_1", "above 1"),
                   ("floor_high_below_1", "below 1"),
                   ("floor_with_interval", "with interval"),
                   ("leak_coverage", "previous: coverage"), ("leak_low_above_1", "above 1"),
                   ("leak_high_below_1", "below 1"), ("own_coverage", "oldest: coverage")]),
        "",
        "## Sequential decisions",
        "",
        "Looks at 3, 5, 7, 9, 10 seeds (n_max = 10), the margin from a noise floor. A/A: any "
        "false 'better'/'worse' over all arms and looks as the verdict now stores it (the "
        "sequential labels; target <= 5%), as the old `decide` stored it (a fixed-n test "
        "at the look where it stopped), for 'run 3 seeds, then decide' any false label in "
        "either verdict (the fixed-n one at 3 seeds, then the sequential one: two tests, "
        "about alpha + alpha; the stored verdict is the sequential one, as in the first "
        "column), and the share of arms found equivalent; every arm 3 sd worse: any arm "
        "called equivalent or better (target <= 5%).",
        "",
        table(sq, [("arms", "arms"), ("rho", "rho"),
                   ("aa_any_better_worse", "A/A any decision (stored)"),
                   ("aa_old_stored", "old stored fixed-n label"),
                   ("aa_then_either", "run 3, then decide: either verdict"),
                   ("aa_equivalent", "A/A equivalent"),
                   ("false_equiv_3sd", "false kept, 3 sd worse")]),
        "",
        "## The rubric, end to end",
        "",
        "One arm against the baseline on the loss curves above; the final loss is the metric "
        "(its sd, 'sd' below, measured on 200,000 curves); rho is the correlation of a "
        "seed's quality offset between the baseline's run and the arm's. A 5 + 5-run noise "
        "floor per trial gives the margin and the time-to-target slack; time-to-target by "
        "the rule's targets and `geo_ratio`; then `compare.apply_decisions` and "
        "`validate.rate` with every rigor check passing (one host, real data, one budget, no "
        "failures), as `airlab verdict` rates. 'cheaper': the arm's seconds divided by 2.5. "
        "Share rated 7-10 (publishable; targets: A/A <= 2.5%, 1 sd worse <= 5%), 5-6, 1-4, "
        "and the mean rating.",
        "",
        table(rb, [("scenario", "scenario"), ("n", "n"), ("rho", "rho"), ("r7", ">= 7"),
                   ("r56", "5-6"), ("r14", "<= 4"), ("mean", "mean")]),
        "",
    ]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=20_000)
    ap.add_argument("--rubric-trials", type=int, default=2_000)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    check_sequential_matches(rng)
    res = {"fixed": fixed_n(rng, args.trials), "floors": floor_sizes(rng, args.trials),
           "power": power(rng, args.trials), "design": design(rng, args.trials),
           "ttt": ttt(rng, args.trials), "seq": seq_sim(rng, args.trials),
           "rubric": rubric_sim(rng, args.rubric_trials)}
    seconds = time.perf_counter() - t0
    doc = write_doc(res, args.trials, args.rubric_trials, seconds)
    print(doc)
    if not args.no_write:
        DOC.write_text(doc)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
