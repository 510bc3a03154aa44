"""The offline Researcher: scope rules, the bandit's beliefs, seeded proposals, Optuna trials
kept in the lab's store, and the novelty check (real SQLite stores, real tiny runs)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airlab.agents.knowledge import Idea, Prediction, get_idea, idea_spec, load_ideas
from airlab.agents.novelty import check_novelty, novelty_calibration
from airlab.agents.researcher import (
    AREA_WEIGHT,
    OUTCOMES,
    PRIOR_WEIGHT,
    TIER_PRIOR,
    Proposal,
    Researcher,
    beliefs,
    gain,
    scope,
)
from airlab.agents.status import IdeaStatus, idea_statuses
from airlab.agents.tuning import study_name
from airlab.errors import AirlabError
from airlab.settings import Settings, get_settings
from airlab.store import Store

ROOT = Path(__file__).resolve().parents[2]
# tests/conftest.py's MICRO (tests/agents/conftest.py shadows that module's name here): a
# transformer small enough that a run takes about a second on one core.
MICRO = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
         "warmup_steps": 5, "eval_points": 2, "eval_tokens": 1024}


def _status(name: str, status: str, ideas: dict[str, Idea] | None = None) -> IdeaStatus:
    idea = (ideas or load_ideas())[name]
    return IdeaStatus(name=name, area=idea.area, aspect=idea.aspect, tier=idea.tier,
                      needs_code=idea.needs_code, status=status,
                      experiments=[] if status == "untested" else [f"idea.{name}"],
                      effect=None, ratio=None, rating=None)


def _statuses(**given: str) -> dict[str, IdeaStatus]:
    return {n: _status(n, given.get(n, "untested")) for n in load_ideas()}


@pytest.fixture
def lab(db_url: str) -> tuple[Store, Settings]:
    return Store(db_url), get_settings(db=db_url)


# --------------------------------------------------------------------------- pure rules


def test_gain_puts_every_prediction_in_ln_speed_up() -> None:
    def pred(**kw: object) -> Prediction:
        return get_idea("muon").prediction.model_copy(update=kw)

    assert gain(pred(metric="time_to_target", kind="ratio", expected=2.0)) == \
        pytest.approx(math.log(2))
    assert gain(pred(metric="val_loss", kind="delta", expected=-0.1)) == pytest.approx(0.3)
    assert gain(pred(metric="val_loss", kind="delta", expected=0.1)) == pytest.approx(-0.3)
    assert gain(pred(metric="train_seconds", kind="ratio", expected=8.0)) == \
        pytest.approx(-math.log(8))  # slower training costs
    assert gain(pred(metric="model_bytes", kind="ratio", expected=0.25)) == \
        pytest.approx(0.1 * math.log(4))  # smaller, but not cheaper to train: a tenth
    assert gain(pred(metric="no_such_metric", kind="delta", expected=1.0)) == 0.0
    # An observed effect replaces the expected one.
    assert gain(get_idea("muon").prediction, -0.2) == pytest.approx(0.6)


def test_outcomes_move_the_idea_and_share_an_area_prior() -> None:
    ideas = load_ideas()
    before = beliefs(ideas, _statuses())
    after = beliefs(ideas, _statuses(muon="better", lion="worse"))
    m = before["muon"]
    assert m.alpha == pytest.approx(PRIOR_WEIGHT * TIER_PRIOR[1])
    assert after["muon"].alpha == pytest.approx(m.alpha + 1 + 0 * AREA_WEIGHT)
    assert after["muon"].beta == pytest.approx(m.beta + AREA_WEIGHT)  # lion's failure
    # An untested idea of the same area inherits both outcomes at the area weight ...
    a = after["adafactor"]
    assert a.alpha == pytest.approx(before["adafactor"].alpha + AREA_WEIGHT)
    assert a.beta == pytest.approx(before["adafactor"].beta + AREA_WEIGHT)
    assert a.area_seen == pytest.approx(2.0)
    # ... and an idea of another area none of them.
    assert after["rope"] == before["rope"]
    assert OUTCOMES["equivalent"] == (0.0, 1.0)


def test_scope_skips_code_running_and_decided_ideas() -> None:
    ideas = load_ideas()
    st = _statuses(rope="running", nope="better", rope_base="worse", muon="better",
                   lion="undecided")
    pool, recheck, _ = scope(ideas, st)
    assert not recheck and "lion" in pool and "tuned_peak_lr" in pool  # open: untested, undecided
    assert not {"rope", "nope", "rope_base", "muon"} & set(pool)  # running or decided
    assert all(not ideas[n].needs_code for n in pool) and "alibi" not in pool
    assert "lion" not in scope(ideas, st, exclude=["lion"])[0]
    # Everything open in positions is decided: re-check (never a running or needs_code one).
    with pytest.raises(AirlabError, match="no idea of area 'positions'"):
        scope(ideas, st, area="positions", exclude=["nope", "rope_base"])
    pool, recheck, notes = scope(ideas, st, area="positions")
    assert pool == ["nope", "rope_base"] and recheck and "re-checking" in notes[0]
    # Naming an idea: a decided one is a re-check; needs_code and running ones are refused.
    assert scope(ideas, st, idea="nope")[1] is True
    with pytest.raises(AirlabError, match="needs code.*--use_alibi"):
        scope(ideas, st, idea="alibi")
    with pytest.raises(AirlabError, match="'rope' is running"):
        scope(ideas, st, idea="rope")
    with pytest.raises(AirlabError, match="did you mean 'muon'"):
        scope(ideas, st, idea="muonn")


# --------------------------------------------------------------------------- novelty


def test_a_paraphrase_under_a_new_name_is_a_known_technique(lab: tuple[Store, Settings]) -> None:
    store, settings = lab
    cal = novelty_calibration()
    assert 0.1 < cal.threshold < 0.5 and cal.balanced_accuracy > 0.7 and cal.positives > 40
    paraphrase = ("Spectral momentum equaliser: replace the momentum of each weight matrix by "
                  "the nearest semi-orthogonal matrix, computed with a few Newton-Schulz "
                  "iterations, so every singular direction of the update gets the same step.")
    n = check_novelty(store, settings, text=paraphrase, arm="spectral_equaliser")
    assert n.known_as == "muon" and not n.novel
    assert n.similar[0][0] == "muon" and n.similar[0][1] >= cal.threshold
    new = ("Skip a batch when a tiny recurrent network, fed the recent loss curve, forecasts "
           "that the batch would barely reduce the loss.")
    n = check_novelty(store, settings, text=new, arm="loss_forecast_skip")
    assert n.known_as is None and n.novel and n.similar[0][1] < cal.threshold
    # An idea of the knowledge base under its own name is not "another name".
    muon = get_idea("muon")
    n = check_novelty(store, settings, text=muon.text(), arm="muon")
    assert n.known_as is None and "muon" not in dict(n.similar)


# --------------------------------------------------------------------------- proposals


def test_same_seed_and_store_give_the_same_proposal(lab: tuple[Store, Settings],
                                                    tmp_path: Path) -> None:
    store, settings = lab
    Researcher(store, settings, seed=3).propose(idea="muon")  # a study with one trial
    store.close()
    assert store.path is not None
    got = []
    for k in range(2):  # two copies of the same store: the same seed proposes the same
        path = tmp_path / f"copy{k}.db"
        shutil.copy(store.path, path)
        copy = Store(f"sqlite:///{path}")
        p = Researcher(copy, settings, seed=7).propose(area="optimizers")
        got.append(p.to_dict())
        copy.close()
    assert got[0] == got[1] and got[0]["trial"] is not None  # Optuna's suggestion included
    p = Proposal.from_dict(json.loads(json.dumps(got[0])))
    assert p.to_dict() == got[0]
    assert len(p.candidates) == 3 and p.chosen == p.candidates[0]
    assert len({c.aspect for c in p.candidates}) == 2  # optimizers holds two aspects
    assert p.chosen.expected_value == max(c.expected_value for c in p.candidates)
    assert p.chosen.idea in p.reasons and "expected value" in p.reasons
    # Different seeds draw differently: not a fixed order.
    chosen = {Researcher(store, settings, seed=s).propose(area="optimizers").candidates[1].idea
              for s in range(6)}
    assert len(chosen) > 1


def test_topic_steers_and_bad_input_is_one_line(lab: tuple[Store, Settings]) -> None:
    store, settings = lab
    r = Researcher(store, settings, seed=0)
    p = r.propose(topic="rotary position embeddings for attention")
    assert {"rope", "nope"} & {c.idea for c in p.candidates}
    assert "topic" in p.reasons.lower()
    with pytest.raises(AirlabError, match="unknown area 'optimiser'"):
        r.propose(area="optimiser")
    with pytest.raises(AirlabError, match="topic is empty"):
        r.propose(topic="  ")
    with pytest.raises(AirlabError, match="seed"):
        Researcher(store, settings, seed=-1)


def test_optuna_trials_live_in_the_lab_store(lab: tuple[Store, Settings]) -> None:
    store, settings = lab
    r = Researcher(store, settings, seed=1)
    first = r.propose(idea="muon")
    assert first.trial == 0 and not first.recheck
    # The first trial is the idea as written: the technique's defaults inside the ranges.
    assert first.options == {"muon_lr": 0.02, "muon_momentum": 0.95}
    r.tell(first, 1.25)
    r.tell(first, 9.0)  # already told: nothing changes
    second = r.propose(idea="muon")
    assert second.trial == 1 and second.options != first.options
    space = get_idea("muon").implementation.search
    for opt, v in second.options.items():
        assert space[opt].low <= v <= space[opt].high
    r.tell(second, None)  # a failed sprint
    # A fresh process reads the study back from the same database.
    code = ("import optuna, json, sys; optuna.logging.set_verbosity(optuna.logging.ERROR); "
            f"s = optuna.load_study(study_name={study_name('muon')!r}, storage=sys.argv[1]); "
            "print(json.dumps([[t.number, t.state.name, t.value, t.params] for t in s.trials]))")
    out = subprocess.run([sys.executable, "-c", code, store.url], capture_output=True,
                         text=True, timeout=120, check=True)
    trials = json.loads(out.stdout)
    assert trials[0][:3] == [0, "COMPLETE", 1.25] and trials[0][3] == first.options
    assert trials[1][:2] == [1, "FAIL"] and trials[1][3] == pytest.approx(second.options)
    # A re-check repeats the best trial so far (a new trial with its options).
    options, trial, resumed, note = r.tuner.tune("muon", recheck=True)
    assert options == first.options and trial == 2 and not resumed and "best trial" in note
    # No search ranges: nothing to tune, no study.
    p = r.propose(idea="rope")
    assert p.options == {} and p.trial is None and "nothing to tune" in p.reasons.lower()


def test_the_first_trial_reads_model_fields_left_at_the_presets_values(
        lab: tuple[Store, Settings]) -> None:
    """smaller_model declares n_layer 2 and searches n_embd too, which the idea leaves at the
    preset's 128: the first trial is still the idea as written."""
    store, settings = lab
    p = Researcher(store, settings, seed=0).propose(idea="smaller_model")
    assert p.trial == 0 and p.options == {"n_layer": 2, "n_embd": 128}


def test_a_suggestion_equal_to_the_base_is_told_ratio_1_and_not_run(
        lab: tuple[Store, Settings]) -> None:
    """On a recipe that already warms up for 20 steps, short_warmup's declared 20 would be an
    A/A sprint: the study is told ratio 1 for it and the next suggestion is proposed."""
    store, settings = lab
    r = Researcher(store, settings, seed=0)
    p = r.propose(idea="short_warmup", is_base=lambda name, o: o["warmup_steps"] == 20)
    assert p.trial == 1 and p.options["warmup_steps"] != 20
    assert "told ratio 1" in p.reasons
    first = r.tuner.study("short_warmup").trials[0]
    assert first.params == {"warmup_steps": 20} and first.value == 1.0


def test_a_trial_left_running_by_a_dead_sprint_is_resumed(lab: tuple[Store, Settings]) -> None:
    store, settings = lab
    code = ("import sys, json; from airlab.store import Store; "
            "from airlab.settings import get_settings; "
            "from airlab.agents.researcher import Researcher; "
            "p = Researcher(Store(sys.argv[1]), get_settings(db=sys.argv[1]), seed=5)"
            ".propose(idea='muon_time_to_target'); print(json.dumps(p.to_dict()))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code, store.url], capture_output=True,
                         text=True, timeout=300, check=True, env=env)  # exits without tell
    crashed = json.loads(out.stdout)
    again = Researcher(store, settings, seed=9).propose(idea="muon_time_to_target")
    assert again.resumed and again.trial == crashed["trial"]
    assert again.options == crashed["options"] and "resumed" in again.reasons.lower()
    # A running trial of a live process is left to it: a new trial is asked.
    import optuna

    study = optuna.load_study(study_name=study_name("muon_time_to_target"), storage=store.url)
    [t] = study.get_trials(deepcopy=False)
    optuna.trial.Trial(study, t._trial_id).set_user_attr(
        "airlab_owner", f"{os.uname().nodename}:{os.getppid()}")  # the live test runner's parent
    third = Researcher(store, settings, seed=9).propose(idea="muon_time_to_target")
    assert not third.resumed and third.trial == 1


# --------------------------------------------------------------------------- real outcomes


def _tiny(name: str) -> Idea:
    """A knowledge-base idea whose minimum experiment is a real run of about a second."""
    d = get_idea(name).model_dump()
    d["minimum_experiment"].update(dataset="pycode", budget={"tokens": 3000.0},
                                   seeds=[42, 137], options=dict(MICRO))
    d["prediction"]["budget"] = None
    return Idea.model_validate(d)


def test_a_stored_experiment_feeds_the_bandit_and_is_a_duplicate(
        lab: tuple[Store, Settings]) -> None:
    from airlab.executors.inprocess import InProcessExecutor
    from airlab.experiment import run_experiment

    store, settings = lab
    ideas = {n: _tiny(n) for n in ("rope", "nope", "qk_norm", "short_warmup")}
    run_experiment(idea_spec(ideas["rope"]), store, InProcessExecutor(settings=settings),
                   settings=settings)
    st = idea_statuses(store, ideas)["rope"]
    assert st.status in OUTCOMES and st.experiments == ["idea.rope"]
    b = beliefs(ideas, idea_statuses(store, ideas))
    s, f = OUTCOMES[st.status]
    assert b["rope"].alpha == pytest.approx(PRIOR_WEIGHT * TIER_PRIOR[1] + s)
    assert b["nope"].alpha == pytest.approx(PRIOR_WEIGHT * TIER_PRIOR[3] + AREA_WEIGHT * s)
    # The identical configs are found, whatever the experiment's name.
    spec = idea_spec(ideas["rope"]).model_copy(update={"name": "renamed"})
    n = check_novelty(store, settings, text=ideas["rope"].text(), spec=spec, arm="rope",
                      ideas=ideas)
    assert n.duplicate_of == "idea.rope" and not n.novel
    other = idea_spec(ideas["rope"], seeds=[7, 8])
    assert check_novelty(store, settings, text="x y z", spec=other, arm="rope",
                         ideas=ideas).duplicate_of is None
    r = Researcher(store, settings, seed=0, ideas=ideas)
    p = r.propose(idea="rope")
    assert p.chosen.novelty.duplicate_of == "idea.rope"
    assert p.recheck == (st.status in ("better", "worse", "equivalent"))
    p = r.propose()
    if st.status != "undecided":  # decided: not proposed while others are open
        assert p.chosen.idea != "rope"
