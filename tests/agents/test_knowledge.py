"""The knowledge base: every idea loads, covers the lab's areas and aspects, runs through the real
registries and planner, makes a consistent prediction, and is found again under a paraphrase.
No training here: ideas are checked by planning their experiments."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from airlab.agents.ideas import ASPECTS, LAB_AREAS, Idea, Prediction
from airlab.agents.knowledge import (
    check_idea,
    filter_ideas,
    idea_spec,
    knowledge_dir,
    load_ideas,
    read_ideas,
    search_space,
    similar_ideas,
)
from airlab.errors import AirlabError
from airlab.techniques import TECHNIQUES

IDEAS = load_ideas()
RUNNABLE = sorted(n for n, i in IDEAS.items() if not i.needs_code)
NEEDS_CODE = sorted(n for n, i in IDEAS.items() if i.needs_code)


def test_enough_ideas_covering_every_area_and_aspect() -> None:
    assert len(IDEAS) >= 45
    assert {i.area for i in IDEAS.values()} >= set(LAB_AREAS)
    assert {i.aspect for i in IDEAS.values()} == set(ASPECTS)
    # Both kinds are present: what the registry runs today, and the Coder's work list.
    assert len(RUNNABLE) >= 30 and len(NEEDS_CODE) >= 10
    assert {i.tier for i in IDEAS.values()} == {1, 2, 3}


def test_names_are_unique_across_files() -> None:
    names = []
    for path in sorted(knowledge_dir().glob("*.yaml")):
        names += [i["name"] for i in yaml.safe_load(path.read_text())["ideas"]]
    assert len(names) == len(set(names)) == len(IDEAS)


def test_every_idea_says_what_the_issue_asks() -> None:
    for idea in IDEAS.values():
        assert idea.pitch.count(". ") == 0, idea.name  # one sentence
        for text in (idea.math, idea.why_it_might_work, idea.why_it_might_not):
            assert len(text.split()) >= 5, idea.name
        assert all(r in IDEAS for r in idea.related), idea.name
        p = idea.prediction
        assert p.low <= p.expected <= p.high, idea.name
        assert p.budget == idea.minimum_experiment.budget, idea.name


@pytest.mark.parametrize("name", RUNNABLE)
def test_runnable_idea_switches_exist_and_its_experiment_plans(name: str) -> None:
    idea = IDEAS[name]
    me = idea.minimum_experiment
    arms = [me.baseline, idea.arm] + ([idea.ablation] if idea.ablation else [])
    for arm in arms:
        for switch in arm.use:
            assert switch in TECHNIQUES, f"{name}: no switch '{switch}'"
    spec = idea_spec(idea)
    assert [a.name for a in spec.all_arms] == [a.name for a in arms]
    assert spec.arms[0].use == idea.arm.use and spec.arms[0].options == idea.arm.options
    # check_idea plans the spec (airlab.plan.plan_runs) and resolves both ends of every search
    # range (every choice) through the registries: a range a run would refuse fails here.
    plans = check_idea(idea)
    assert len(plans) == len(arms) * len(me.seeds)
    assert len({p.run_key for p in plans}) == len(plans), "two arms resolve to one config"


@pytest.mark.parametrize("name", NEEDS_CODE)
def test_needs_code_ideas_name_a_switch_still_to_write(name: str) -> None:
    idea = IDEAS[name]
    switch = idea.implementation.switch
    assert switch and switch not in TECHNIQUES, \
        f"{name}: '{switch}' is registered now; give the idea its use/options instead"
    assert all(s in TECHNIQUES for s in idea.minimum_experiment.baseline.use), name
    with pytest.raises(AirlabError, match="needs code"):
        idea_spec(idea)


def test_idea_spec_arms_ablation_and_overrides() -> None:
    spec = idea_spec("muon_time_to_target", seeds=[1, 2], budget={"tokens": 5000})
    assert spec.name == "idea.muon_time_to_target"
    assert spec.seeds == [1, 2] and spec.budget == {"tokens": 5000.0}
    names = [a.name for a in spec.all_arms]
    # Derived ablation: the switch at its defaults, without the tuned option.
    assert names == ["baseline", "muon_time_to_target", "muon_time_to_target.switch_only"]
    assert spec.arms[1].use == ["muon"] and spec.arms[1].options == {}
    assert "Prediction: time_to_target ratio" in spec.hypothesis
    # The prediction keeps the budget it was made for, whatever budget the Architect picks.
    assert IDEAS["muon_time_to_target"].prediction.budget == {"tokens": 400000.0}
    # A needs-code idea's baseline with a switch: global tokens are tested against a window.
    assert IDEAS["global_tokens"].minimum_experiment.baseline.use == ["local_attn"]


def test_search_space_dimensions() -> None:
    space = search_space("short_warmup")
    assert space["warmup_steps"].is_int and space["warmup_steps"].points == [0, 100]
    lr = search_space("tuned_peak_lr")["lr"]
    assert lr.log and not lr.is_int and lr.low < 0.003 < lr.high
    assert search_space("qat_int4")["quant_bits"].points == [3, 4, 6, 8]
    assert search_space("lr_far_too_high") == {}


def test_prediction_scoring_and_consistency() -> None:
    p = IDEAS["small_batch"].prediction
    assert p.score(p.expected).hit and p.score(p.expected).direction_right
    far = p.score(p.high + 0.5)
    assert not far.hit and not far.direction_right and far.miss_by == pytest.approx(0.5)
    with pytest.raises(ValueError, match="low <= expected <= high"):
        Prediction(metric="val_loss", direction="lower", expected=-0.2, low=-0.1, high=0.0)
    with pytest.raises(ValueError, match="not lower than no change"):
        Prediction(metric="val_loss", direction="lower", expected=0.05, low=0.0, high=0.1)
    with pytest.raises(ValueError, match="not higher than no change"):
        Prediction(metric="time_to_target", kind="ratio", direction="higher", expected=0.9,
                   low=0.5, high=1.5)


def test_filters() -> None:
    quant = filter_ideas(area="quantization")
    assert quant and all(i.area == "quantization" for i in quant)
    runnable = filter_ideas(aspect="attention", runnable=True)
    assert runnable and all(not i.needs_code for i in runnable)
    with pytest.raises(AirlabError, match="unknown area 'quantisation'"):
        filter_ideas(area="quantisation")


@pytest.mark.parametrize("text,expected", [
    ("rotate the query and key vectors by an angle that depends on the token's position",
     "rope"),
    ("orthogonalise the momentum matrix with a few Newton-Schulz iterations before stepping",
     "muon"),
    ("keep a running average of the parameters and evaluate that averaged model", "ema_weights"),
    ("penalise the square of the log of the softmax normalising constant", "z_loss"),
    ("simulate low-bit weights during training and pass gradients straight through rounding",
     "qat_int4"),
    ("subtract a penalty proportional to how far back the key is from the query", "alibi"),
    ("route each token to one of several small feed-forward experts", "sparse_dense_moe"),
])
def test_similar_ideas_finds_a_known_idea_under_a_paraphrase(text: str, expected: str) -> None:
    found = similar_ideas(text, k=3)
    assert expected in [n for n, _ in found], found
    assert all(0.0 <= s <= 1.0 for _, s in found)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


@pytest.mark.parametrize("text", ["how to repair a bicycle puncture",
                                  "a short poem about autumn leaves in the park"])
def test_off_topic_text_scores_low(text: str) -> None:
    # Scores are relative (TF-IDF over this corpus): an off-topic text shares few words and
    # character n-grams with any idea, so its best match scores well below a paraphrase's.
    best = similar_ideas("rotate the query and key vectors by position-dependent angles", 1)[0]
    unrelated = similar_ideas(text, 1)[0]
    assert best[0] == "rope"
    assert unrelated[1] < best[1] / 2, unrelated


# ---------------------------------------------------------------------------------------------
# Bad files: one error naming the file, line and field


GOOD = """\
area: optimizers
ideas:
  - name: my_idea
    title: A test idea
    aspect: optimizers
    tier: 2
    pitch: Raise the learning rate for a short run.
    math: "eta: 1e-3 -> 3e-3"
    why_it_might_work: short runs are step-size limited
    why_it_might_not: attention logits may spike early on
    implementation:
      options: {lr: 0.003}
    prediction: {metric: val_loss, direction: lower, expected: -0.1, low: -0.2, high: -0.01}
"""


def _write(tmp_path: Path, text: str, name: str = "ideas.yaml") -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_a_good_file_loads(tmp_path: Path) -> None:
    ideas = read_ideas(_write(tmp_path, GOOD))
    assert isinstance(ideas["my_idea"], Idea) and ideas["my_idea"].area == "optimizers"
    assert ideas["my_idea"].prediction.budget == {"tokens": 200000.0}


@pytest.mark.parametrize("old,new,message", [
    ("low: -0.2", "low: -0.05", r"ideas\.yaml:13: idea 'my_idea': prediction: .*low <= expected"),
    ("tier: 2", "tier: 5", r"ideas\.yaml:6: idea 'my_idea': tier: "),
    ("    tier: 2\n", "    tier: 2\n    priority: 1\n", r":7: idea 'my_idea': unknown field "
                                                        r"'priority'"),
    ("aspect: optimizers", "aspect: optimisers", r":5: idea 'my_idea': aspect: "),
    ("options: {lr: 0.003}", "search: {lr: {low: 0.001, high: 0.01}}",
     r":11: idea 'my_idea': implementation: give the switches"),
    ("options: {lr: 0.003}", "{options: {lr: 0.003}, search: {lr: {low: 0.01, high: 0.001}}}",
     r":12: idea 'my_idea': implementation.search.lr: low=0.01 must be below"),
    ("name: my_idea", "name: My-Idea", r":3: idea 'My-Idea': name: .*slug"),
])
def test_bad_ideas_name_file_line_and_field(tmp_path: Path, old: str, new: str,
                                            message: str) -> None:
    assert old in GOOD
    with pytest.raises(AirlabError, match=message):
        read_ideas(_write(tmp_path, GOOD.replace(old, new)))


def test_duplicate_names_and_unknown_related_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, GOOD, "a.yaml")
    _write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(AirlabError, match=r"b\.yaml:3: idea name 'my_idea' is used twice"):
        read_ideas(tmp_path)
    (tmp_path / "b.yaml").unlink()
    _write(tmp_path, GOOD + "    related: [my_ideaa]\n", "a.yaml")
    with pytest.raises(AirlabError, match=r"related: no idea 'my_ideaa'.*did you mean 'my_idea'"):
        read_ideas(tmp_path)


def test_not_yaml_and_wrong_shape_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AirlabError, match=r"ideas\.yaml:\d+: not valid YAML"):
        read_ideas(_write(tmp_path, "ideas: [\n"))
    with pytest.raises(AirlabError, match="a list under 'ideas'"):
        read_ideas(_write(tmp_path, "- name: x\n"))
