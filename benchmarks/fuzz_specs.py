"""Fuzz `airlab check` with 1,000+ malformed specs (issue 11).

Every library spec (plus a vision spec) is mutated in each class of bad input the issue lists:
wrong types, huge numbers, NaN, unicode, control characters, deep or aliased YAML, duplicate
keys, conflicting switches, reserved overrides, unit mismatches, unmeasured metrics, bad
timeouts, unsafe `file:` datasets, ... Each case is checked in-process (`airlab.check.check_file`)
and a sample through the installed console script (`airlab check SPEC`) in subprocesses.

Counted: one-line errors, tracebacks (any other exception), accepted specs, and accepted specs of
a class that must be refused ("accepted but wrong"). A few valid variants (unicode hypothesis, a
relative `file:` corpus) are controls that must be accepted.

    python benchmarks/fuzz_specs.py [--subprocess 30] [--seed 0] [--show 3]
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from airlab.check import check_file
from airlab.errors import AirlabError
from airlab.spec import library_dir

Case = tuple[str, bool, Any]  # (class, must be refused, dict or bytes)

VISION = {
    "name": "vision_fuzz", "workload": "vision", "preset": "cnn", "dataset": "digits",
    "budget": {"epochs": 2}, "baseline": {"name": "base"},
    "arms": [{"name": "sep", "use": ["separable_conv"]},
             {"name": "lion", "use": ["lion"], "options": {"lr": 0.001}}],
    "seeds": [42, 137], "metric": "val_acc", "direction": "maximize",
}


def bases() -> list[dict[str, Any]]:
    out = []
    for p in sorted(library_dir().glob("*.yaml")):
        d = yaml.safe_load(p.read_text())
        d.pop("aliases", None)
        out.append(d)
    return out + [VISION]


def _arm(d: dict[str, Any]) -> dict[str, Any]:
    return d["arms"][0] if d.get("arms") else d["baseline"]


def _with(d: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    node = d
    for k in path[:-1]:
        node = node.setdefault(k, {}) if isinstance(k, str) else node[k]
    node[path[-1]] = value
    return d


def _arm_opt(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    _arm(d).setdefault("options", {})[key] = value
    return d


def dict_cases(d: dict[str, Any], rng: random.Random, files: dict[str, Path]) -> list[Case]:
    charlm = d["workload"] == "charlm"
    own_unit = "tokens" if charlm else "samples"
    c: list[Case] = []
    # wrong types: every field gets two values of a type it cannot take
    wrong = {"name": [5, ["x"]], "budget": ["lots", [1000]], "baseline": [[], "base"],
             "arms": ["rope", {"a": 1}], "seeds": ["42", {"a": 1}], "options": [[], "lr"],
             "metric": [5, ["val_loss"]], "direction": ["up", 1], "tolerance": ["abc", []],
             "timeout_s": ["soon", []], "sweep": ["lr", [1, 2]], "hypothesis": [5, {"a": 1}],
             "workload": [1, "charlmm"], "preset": [3, "tinyy"], "dataset": [7, "nope"],
             "quick_budget": ["x", [1]], "area": [1, []]}
    for k, vs in wrong.items():
        c += [("wrong_type", True, _with(d, (k,), v)) for v in vs]
    c += [("wrong_type", True, _with(d, ("arms",), [{"name": "a", "use": 5}])),
          ("wrong_type", True, _with(d, ("arms",), [{"name": "a", "options": [1]}])),
          ("wrong_type", True, _with(d, ("arms",), [{"name": "a", "use": [["rope"]]}]))]
    # huge numbers
    c += [("huge_number", True, _with(d, ("seeds",), [2**64])),
          ("huge_number", True, _with(d, ("seeds",), [10**30])),
          ("huge_number", True, _with(d, ("budget",), {own_unit: 10**30})),
          ("huge_number", True, _with(d, ("budget",), {own_unit: 1e300})),
          ("huge_number", True, _with(d, ("timeout_s",), 1e300)),
          ("huge_number", True, _arm_opt(d, "batch_size", 10**30))]
    # NaN and infinities
    for v in (float("nan"), float("inf"), float("-inf")):
        c += [("nan_inf", True, _with(d, ("budget",), {own_unit: v})),
              ("nan_inf", True, _with(d, ("timeout_s",), v)),
              ("nan_inf", True, _arm_opt(d, "lr", v)),
              ("nan_inf", True, _with(d, ("tolerance",), v))]
    c.append(("nan_inf", True, _with(d, ("sweep",), {"values": [float("nan"), 1.0]})))
    # zero and negative
    for v in (0, -1, -1e-9):
        c += [("non_positive", True, _with(d, ("budget",), {own_unit: v})),
              ("non_positive", True, _with(d, ("timeout_s",), v))]
    c += [("non_positive", True, _arm_opt(d, "lr", 0)),
          ("non_positive", True, _arm_opt(d, "lr", -0.001)),
          ("non_positive", True, _arm_opt(d, "batch_size", 0)),
          ("non_positive", True, _with(d, ("sweep",), {"mode": "scale", "values": [0.0, 1.0]}))]
    # names: empty, blank, path-like, too long, unicode, control characters, surrogates
    bad_names = ["", " ", "/", "..", "../up", "a/b", "-lead", ".hidden", "x" * 65, "ünï",
                 "emoji🙂", "a\0b", "a\nb", "a\tb", "bell\a", "rtl\u202ename", "sur\ud800x"]
    for n in bad_names:
        c.append(("arm_name", True, _with(d, ("baseline", "name"), n)))
    for n in ["", "x" * 101, "a b", "a/b", "nul\0", "line\nbreak", "sur\udfffx"]:
        c.append(("experiment_name", True, _with(d, ("name",), n)))
    for s in ["\ud800", "bad\udc00surrogate"]:
        c += [("surrogate", True, _with(d, ("hypothesis",), s)),
              ("surrogate", True, _arm_opt(d, s, 1)),
              ("surrogate", True, _with(d, ("metric",), s))]
    c += [("control_char", True, _with(d, ("metric",), "val_loss\0")),
          ("control_char", True, _with(d, ("hypothesis",), "nul\0inside")),
          ("control_char", True, _with(d, ("area",), "a\x1bb")),
          ("control_char", True, _arm_opt(d, "l\nr", 0.1))]
    # seeds
    for s in ([-1], [1.5], ["42"], [True], [], [7, 7], [2**63]):
        c.append(("seeds", True, _with(d, ("seeds",), s)))
    # non-string keys in a mapping
    c += [("nonstring_key", True, {**copy.deepcopy(d), 1: 2}),
          ("nonstring_key", True, {**copy.deepcopy(d), None: "x"}),
          ("nonstring_key", True, _with(d, ("budget",), {1: 1000})),
          ("nonstring_key", True, _with(d, ("options",), {2.5: 1}))]
    # conflicting switches
    pairs = [("muon", "lion"), ("lion", "adafactor"), ("sgd_nesterov", "muon"), ("bf16", "fp16"),
             ("wq_int8", "wq_int4"), ("prune_oneshot", "prune_gradual")]
    if charlm:
        pairs += [("rope", "nope"), ("gqa", "mqa"), ("relu2", "swiglu")]
    for a, b in pairs:
        c.append(("conflict", True, _with(d, ("arms",), [{"name": "both", "use": [a, b]}])))
    c.append(("conflict", True, _with(d, ("arms",), [{"name": "twice", "use": ["bf16", "bf16"]}])))
    # reserved fields overridden by an arm (or given as options at the top)
    for k, v in [("tokens", 1000), ("samples", 1000), ("epochs", 1), ("seconds", 5),
                 ("preset", "small"), ("dataset", "shakespeare"), ("device", "cpu"),
                 ("seed", 1000), ("eval_points", 3), ("eval_tokens", 999), ("workload", "vision"),
                 ("diverge_factor", 9.0)]:
        c.append(("reserved_override", True, _arm_opt(d, k, v)))
    for k, v in [("seed", 1), (own_unit, 1000), ("dataset", "pycode")]:
        c.append(("reserved_override", True, _with(d, ("options", k), v)))
    # budget unit that does not fit the workload, unknown or two units
    other = "samples" if charlm else "tokens"
    c += [("budget_unit", True, _with(d, ("budget",), {other: 1000})),
          ("budget_unit", True, _with(d, ("quick_budget",), {other: 100})),
          ("budget_unit", True, _with(d, ("budget",), {"steps": 100})),
          ("budget_unit", True, _with(d, ("budget",), {own_unit: 100, "seconds": 5}))]
    # metrics that are never measured
    for m in ["val_acc" if charlm else "val_bpc", "accuracy", "val_los", "", "VAL_LOSS",
              "val loss", "gns_b_simple"]:
        c.append(("metric", True, _with(d, ("metric",), m)))
    # a metric optimised the wrong way round
    c += [("direction", True, _with(d, ("direction",), "maximize" if d.get("direction", "minimize")
                                    == "minimize" else "minimize"))]
    # timeouts
    for t in [float("inf"), 1e300, 86_401, 0, -1, "abc", True]:
        c.append(("timeout", True, _with(d, ("timeout_s",), t)))
    # unknown optimizer or device
    for k, v in [("optimizer", "adamx"), ("optimizer", ""), ("device", "tpu"),
                 ("device", "cuda:x"), ("device", "")]:
        c.append(("optimizer_device", True, _with(d, ("options", k), v)))
    # option values no model or trainer can take
    bad_opts = [("n_head", 2.5), ("n_head", "x"), ("base_batch_size", "abc"), ("batch_size", 1.5),
                ("warmup_steps", -1), ("lr", "abc"), ("n_embd", 130), ("unknown_opt", 1),
                ("prune_sparsity", 2.0), ("kd_alpha", -1), ("schedule", "zigzag"),
                ("beta1", 1.5), ("grad_clip", -1)]
    if not charlm:
        bad_opts = [(k, v) for k, v in bad_opts if k not in ("n_head", "n_embd")]
    for k, v in bad_opts:
        c.append(("bad_option", True, _arm_opt(d, k, v)))
    # sweeps
    c += [("sweep", True, _with(d, ("sweep",), {"values": [0.1, 0.1]})),
          ("sweep", True, _with(d, ("sweep",), {"option": "seed", "values": [1, 2]})),
          ("sweep", True, _with(d, ("sweep",), {"option": "nonexistent", "values": [1, 2]})),
          ("sweep", True, _with(d, ("sweep",), {"mode": "scale", "values": [-1, 1]})),
          ("sweep", True, _with(d, ("sweep",), {"values": ["a", "b"]})),
          ("sweep", True, _with(d, ("sweep",), {"option": "schedule", "mode": "scale",
                                                "values": [1, 2]})),
          ("sweep", True, _with(d, ("sweep_chosen",), {"baseline": 0.1})),
          ("sweep", True, _with(_with(d, ("sweep",), {"values": [0.5, 1.0]}), ("sweep_chosen",),
                                {d["baseline"]["name"]: 0.5}))]
    # file: datasets (only text workloads read files)
    if charlm:
        for target in ["/dev/zero", "/proc/self/environ", "/etc/passwd", "/nonexistent/x.txt",
                       "", str(files["dir"]), str(files["sparse"]), str(files["link"]),
                       str(files["empty"]), "/dev/stdin"]:
            c.append(("file_dataset", True, _with(d, ("dataset",), f"file:{target}")))
        c.append(("valid_control", False, _with(d, ("dataset",), "file:corpus.txt")))
    # unknown fields
    c += [("unknown_field", True, _with(d, ("hypothesys",), "typo")),
          ("unknown_field", True, _with(d, ("arms",), [{"name": "a", "usee": ["rope"]}]))]
    # valid controls: the spec itself, free text with unicode and newlines
    c += [("valid_control", False, copy.deepcopy(d)),
          ("valid_control", False, _with(d, ("hypothesis",), "Ünïcödé 🙂 hypothesis\nline 2")),
          ("valid_control", False, _with(d, ("baseline", "description"), "tab\there é"))]
    return c


def text_cases(d: dict[str, Any], rng: random.Random) -> list[Case]:
    text = yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
    lines = text.splitlines(keepends=True)
    c: list[Case] = []
    raw = text.encode()
    for _ in range(4):  # bytes that are not UTF-8, at random places
        i = rng.randrange(len(raw))
        c.append(("non_utf8", True, raw[:i] + rng.choice([b"\xff", b"\xc3(", b"\xed\xa0\x80",
                                                         b"\x80\x80"]) + raw[i:]))
    c += [("yaml_alias", True, (text + "x: &a [1, 2]\ny: *a\n").encode()),
          ("yaml_alias", True, (text + "bomb: &a [&b [&c [1, 1], *c], *b]\n").encode()),
          ("yaml_alias", True, (text + "loop: &a [*a]\n").encode()),
          ("yaml_alias", True, ("base: &b {name: x}\n" + text.replace(
              f"baseline:\n  name: {d['baseline']['name']}", "baseline: *b")).encode())]
    for depth in (20, 1_000, 100_000):
        c += [("yaml_deep", True, (text + "options: " + "[" * depth + "]" * depth).encode()),
              ("yaml_deep", True, (text + "hyp: " + "{a: " * depth + "1" + "}" * depth).encode())]
    c += [("yaml_deep", True, (text + "".join(" " * i + "a:\n" for i in range(200))).encode())]
    first = lines[0]
    c += [("duplicate_key", True, (text + first).encode()),
          ("duplicate_key", True, text.replace("budget:\n", "budget:\n  tokens: 1\n", 1)
           .encode() if "budget:\n" in text else (text + "budget: {x: 1, x: 2}\n").encode()),
          ("duplicate_key", True, (text + "sweep: {values: [1, 2], values: [3, 4]}\n").encode())]
    c += [("nonstring_key", True, (text + "? [a, b]\n: 1\n").encode()),
          ("nonstring_key", True, (text + "? {a: 1}\n: 2\n").encode()),
          ("nonstring_key", True, (text + "true: 1\n").encode()),
          ("nonstring_key", True, (text + "1.5: x\n").encode())]
    c += [("non_mapping", True, b"- 1\n- 2\n"), ("non_mapping", True, b"just text\n"),
          ("non_mapping", True, b""), ("non_mapping", True, b"null\n"),
          ("non_mapping", True, (text + "---\nname: second\n").encode()),
          ("non_mapping", True, b"\x00\x01\x02"),
          ("yaml_syntax", True, (text + "arms: [\n").encode()),
          ("yaml_syntax", True, (text + "\tbad: tab\n").encode()),
          ("yaml_syntax", True, (text + "x: !!python/object:os.system 'ls'\n").encode()),
          ("yaml_type", True, (text + "x: !!binary aGVsbG8=\n").encode()),
          ("yaml_type", True, text.replace(f"name: {d['name']}", "name: 2001-01-01", 1).encode())]
    return c


def make_files(root: Path) -> dict[str, Path]:
    files = {"dir": root / "adir", "sparse": root / "sparse.txt", "link": root / "zero.txt",
             "empty": root / "empty.txt"}
    files["dir"].mkdir()
    with open(files["sparse"], "wb") as f:
        f.truncate(300 * 1024 * 1024)  # 300 MiB without writing it
    os.symlink("/dev/zero", files["link"])
    files["empty"].write_text("")
    (root / "corpus.txt").write_text("def f(x):\n    return x * 2\n" * 200)
    return files


def dump(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    return yaml.safe_dump(payload, sort_keys=False, allow_unicode=True).encode(
        "utf-8", "surrogatepass")


def one_line(msg: str) -> bool:
    try:
        msg.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(msg) and "\n" not in msg and "\r" not in msg and msg.isprintable()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subprocess", type=int, default=30, help="cases run through `airlab check`")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=3, help="examples to print per failure kind")
    ap.add_argument("--json", type=Path, help="write the per-case results here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="airlab-fuzz-"))
    try:
        run(args, rng, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, rng: random.Random, root: Path) -> None:
    files = make_files(root)
    cases: list[Case] = []
    for d in bases():
        cases += dict_cases(d, rng, files) + text_cases(d, rng)
    stats: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    examples: dict[str, list[str]] = collections.defaultdict(list)
    results = []
    paths = []
    quality = collections.Counter()
    t0 = time.perf_counter()
    for i, (cls, must_refuse, payload) in enumerate(cases):
        path = root / f"case{i:05d}.yaml"
        path.write_bytes(dump(payload))
        paths.append(path)
        try:
            spec, problems = check_file(path)
        except Exception as e:  # the thing this fuzz exists to find
            outcome = "traceback"
            detail = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            tb = traceback.format_exc().strip().splitlines()[-3:]
            detail += " | " + " / ".join(x.strip() for x in tb)
        else:
            if spec is not None:
                outcome = "accepted_wrong" if must_refuse else "accepted"
                detail = path.read_bytes()[:300].decode("utf-8", "replace")
            elif not problems or not all(isinstance(p, AirlabError) for p in problems):
                outcome, detail = "traceback", "refused without an AirlabError"
            elif all(one_line(str(p)) for p in problems):
                outcome = "refused" if must_refuse else "refused_valid"
                detail = str(problems[0])
                first = str(problems[0])
                quality["messages"] += 1
                quality["file"] += first.startswith(str(path))
                quality["file_line"] += bool(re.match(re.escape(str(path)) + r":\d+: ", first))
                quality["suggestion"] += bool(problems[0].hint) or bool(
                    re.search(r"; |e\.g\.|did you mean|choose from", first))
            else:
                outcome, detail = "multi_line", repr(str(problems[0]))[:300]
        stats[cls][outcome] += 1
        if outcome not in ("refused", "accepted") and len(examples[outcome]) < 1000:
            examples[outcome].append(f"[{cls}] {detail}")
        results.append({"case": i, "class": cls, "must_refuse": must_refuse,
                        "outcome": outcome, "detail": detail,
                        "problems": len(problems) if outcome != "traceback" else None})
    dt = time.perf_counter() - t0

    total = collections.Counter()
    for cnt in stats.values():
        total.update(cnt)
    n = len(cases)
    print(f"{n} specs checked in-process in {dt:.1f} s ({1000 * dt / n:.0f} ms each)\n")
    print("| class | cases | refused, one line | tracebacks | multi-line | accepted but wrong "
          "| valid accepted | valid refused |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for cls in sorted(stats):
        s = stats[cls]
        print(f"| {cls} | {sum(s.values())} | {s['refused']} | {s['traceback']} | "
              f"{s['multi_line']} | {s['accepted_wrong']} | {s['accepted']} | "
              f"{s['refused_valid']} |")
    print(f"| **all** | {n} | {total['refused']} | {total['traceback']} | "
          f"{total['multi_line']} | {total['accepted_wrong']} | {total['accepted']} | "
          f"{total['refused_valid']} |\n")
    m = quality["messages"] or 1
    print(f"first messages naming the file: {quality['file']}/{m}; file:line: "
          f"{quality['file_line']}/{m}; with a suggestion: {quality['suggestion']}/{m}\n")
    for kind in ("traceback", "multi_line", "accepted_wrong", "refused_valid"):
        for ex in examples[kind][: args.show]:
            print(f"{kind}: {ex}")
    subprocess_sample(args, rng, cases, paths, [r["problems"] for r in results])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def subprocess_sample(args: argparse.Namespace, rng: random.Random, cases: list[Case],
                      paths: list[Path], n_problems: list[int | None]) -> None:
    exe = shutil.which("airlab", path=str(Path(sys.executable).parent)) or shutil.which("airlab")
    if args.subprocess <= 0:
        return
    if not exe:
        print("\nconsole script `airlab` not found: subprocess sample skipped")
        return
    # One case of every class first (so each class meets the real command), then random ones.
    by_class: dict[str, list[int]] = collections.defaultdict(list)
    for i, (cls, _, _) in enumerate(cases):
        by_class[cls].append(i)
    pick = [rng.choice(ix) for _, ix in sorted(by_class.items())][: args.subprocess]
    rest = [i for i in range(len(cases)) if i not in set(pick)]
    pick += rng.sample(rest, max(0, min(args.subprocess - len(pick), len(rest))))
    counts = collections.Counter()
    bad: list[str] = []
    t0 = time.perf_counter()
    for i in pick:
        cls, must_refuse, _ = cases[i]
        p = subprocess.run([exe, "check", str(paths[i])], capture_output=True, timeout=120,
                           env={**os.environ, "AIRLAB_HOME": str(paths[i].parent / "home")})
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        traced = "Traceback" in out
        if traced:
            kind = "traceback"
        elif must_refuse and p.returncode == 2:
            # `airlab check` prints one line per problem: as many lines as check_file found.
            lines = [x for x in out.splitlines() if x.strip()]
            kind = ("refused_exit_2_one_line_per_problem" if len(lines) == n_problems[i]
                    else f"refused_exit_2_{len(lines)}_lines_for_{n_problems[i]}_problems")
        elif must_refuse and p.returncode == 0:
            kind = "accepted_wrong"
        elif not must_refuse and p.returncode == 0:
            kind = "accepted_valid"
        else:
            kind = f"exit_{p.returncode}"
        counts[kind] += 1
        ok = ("refused_exit_2_one_line_per_problem", "accepted_valid")
        if kind not in ok and len(bad) < args.show * 3:
            bad.append(f"{kind} [{cls}]: {out.strip().splitlines()[-1:] if out.strip() else ''}")
    dt = time.perf_counter() - t0
    print(f"\nsubprocess sample through {exe} check: {len(pick)} specs in {dt:.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for b in bad:
        print("  " + b)


if __name__ == "__main__":
    main()
