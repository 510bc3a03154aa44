"""Property: any input to the spec loader and checker gives a valid spec or one-line errors.

Never another exception, never a multi-line or unprintable message. Bounded (about 200 examples
in all) so CI runs it on every change; benchmarks/fuzz_specs.py is the 1,000-spec version.
"""

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airlab.check import check_file
from airlab.errors import AirlabError
from airlab.spec import ExperimentSpec, spec_from_dict

FIELDS = ["name", "hypothesis", "area", "workload", "preset", "dataset", "budget", "baseline",
          "arms", "seeds", "options", "metric", "direction", "tolerance", "timeout_s", "sweep",
          "sweep_chosen", "quick_budget", "use", "values", "tokens", "samples", "epochs",
          "seconds", "lr", "seed", "n_head", "batch_size", "device", "optimizer", "mode"]
NAMES = ["rope", "nope", "gqa", "mqa", "muon", "lion", "bf16", "fp16", "wq_int8", "wq_int4",
         "charlm", "vision", "tiny", "pycode", "val_loss", "val_acc", "file:x.txt", "", " ", "/"]

GOOD: dict[str, Any] = {
    "name": "fuzz", "workload": "charlm", "preset": "tiny", "dataset": "pycode",
    "budget": {"tokens": 5000}, "baseline": {"name": "base"},
    "arms": [{"name": "rope", "use": ["rope"]}, {"name": "lr2", "options": {"lr": 0.002}}],
    "seeds": [1, 2],
}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(NAMES),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12), st.integers(-3, 3))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def assert_clean(problems: list[AirlabError]) -> None:
    assert problems
    for p in problems:
        assert isinstance(p, AirlabError)
        msg = str(p)
        assert msg and "\n" not in msg and "\r" not in msg, msg
        msg.encode("utf-8")  # no lone surrogates: the CLI can print it


def check_text(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "spec.yaml"
        p.write_bytes(data)
        spec, problems = check_file(p)
    if spec is None:
        assert_clean(problems)
    else:
        assert not problems and isinstance(spec, ExperimentSpec)


def dump(data: Any) -> bytes:
    try:
        return yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, RecursionError):
        return repr(data).encode("utf-8", "surrogatepass")


FUZZ = settings(max_examples=70, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(
    lambda t: t.encode("utf-8", "surrogatepass"))))
def test_any_bytes(data: bytes) -> None:
    check_text(data)


@FUZZ
@given(st.dictionaries(keys, values, max_size=8))
def test_random_mappings(data: dict[Any, Any]) -> None:
    check_text(dump(data))
    try:
        spec_from_dict(data, "<fuzz>")
    except AirlabError as e:
        assert_clean([e])


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The good spec with a few fields (top-level or in an arm) replaced by random values.

    A mutation into an arm or its options is dropped when an earlier one already replaced that
    container (``arms: null``, ``options: 3``): there is nothing left to write into."""
    spec = copy.deepcopy(GOOD)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["top", "arm", "budget", "options"]))
        key, value = draw(st.sampled_from(FIELDS)), draw(values)
        i = draw(st.integers(0, 1)) if where == "arm" else 1
        arms = spec.get("arms")
        arm = arms[i] if isinstance(arms, list) and len(arms) > i else None
        if where == "top":
            spec[key] = value
        elif where == "arm" and isinstance(arm, dict):
            arm[key] = value
        elif where == "budget":
            spec["budget"] = {draw(st.sampled_from(["tokens", "samples", "seconds", key])): value}
        elif where == "options" and isinstance(arm, dict) and isinstance(arm.get("options"), dict):
            arm["options"][key] = value
    return spec


@FUZZ
@given(mutated())
def test_mutations_of_a_good_spec(data: dict[str, Any]) -> None:
    check_text(dump(data))
