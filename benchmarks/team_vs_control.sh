#!/usr/bin/env bash
# The team against the random-search control, at equal compute (docs/team.md, "The team
# against a control").
#
#   benchmarks/team_vs_control.sh TASK HOURS [OUT]
#
# TASK: pycode | shakespeare | pydoc | vision. Runs two `airlab auto` sessions side by side,
# the team (`--researcher team`) and the control (`--researcher random`), each pinned to its
# own core (taskset) with one worker, in its own lab folder (so neither adopts the other's
# runs nor reads its results), with the same task, budget, seeds, time box, options and
# transfer; then writes both leaderboards, the comparison (table and plot) and each session's
# export under OUT (default runs/TASK-HOURSh).
#
# Environment: AIRLAB (the command, default .venv/bin/airlab), TOKENS / SAMPLES (the budget
# per run; default 400000 tokens, 30000 samples), DATASET (vision: digits by default, or mnist,
# fashion-mnist, cifar10), MINUTES (the time box per sprint, default
# 30), SEED (default 0), TEAM_CPUS / CONTROL_CPUS (default 0 and 1), CONTROL=0 (the team
# alone: the vision session of the issue), AIRLAB_DATA_DIR (shakespeare needs
# tinyshakespeare/input.txt there, or the network). PRINT=1 prints the commands only.
#
# The one-hour sessions of issue 24 (the lead runs them on a quiet machine):
#   AIRLAB_DATA_DIR=../shared/data benchmarks/team_vs_control.sh shakespeare 1
#   benchmarks/team_vs_control.sh pycode 1
#   CONTROL=0 benchmarks/team_vs_control.sh vision 0.5
# The short validation run (10-minute sessions, a smaller budget so that a few sprints fit):
#   TOKENS=100000 MINUTES=6 benchmarks/team_vs_control.sh pycode 0.1667 runs/validate
set -euo pipefail

task=${1:?"usage: $0 pycode|shakespeare|pydoc|vision HOURS [OUT]"}
hours=${2:?"usage: $0 TASK HOURS [OUT]"}
out=${3:-runs/${task}-${hours}h}
airlab=${AIRLAB:-.venv/bin/airlab}
minutes=${MINUTES:-30}
seed=${SEED:-0}
case "$task" in
  pycode|pydoc|shakespeare) base=(--dataset "$task" --tokens "${TOKENS:-400000}") ;;
  vision) base=(--workload vision --dataset "${DATASET:-digits}" --samples "${SAMPLES:-30000}") ;;
  *) echo "unknown task '$task': pycode, pydoc, shakespeare or vision" >&2; exit 2 ;;
esac
common=(auto --hours "$hours" --seed "$seed" --workers 1 --minutes "$minutes" "${base[@]}")
team=(taskset -c "${TEAM_CPUS:-0}" "$airlab" --home "$out/team" "${common[@]}"
      --session team --researcher team)
control=(taskset -c "${CONTROL_CPUS:-1}" "$airlab" --home "$out/control" "${common[@]}"
         --session control --researcher random)

if [[ "${PRINT:-0}" == 1 ]]; then
  echo "OMP_NUM_THREADS=1 ${team[*]}"
  [[ "${CONTROL:-1}" == 0 ]] || echo "OMP_NUM_THREADS=1 ${control[*]}"
  exit 0
fi
mkdir -p "$out"
export OMP_NUM_THREADS=1
date -u +"started %Y-%m-%dT%H:%M:%SZ; load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/README.txt"
"${team[@]}" > "$out/team.log" 2>&1 &
pids=($!)
if [[ "${CONTROL:-1}" != 0 ]]; then
  "${control[@]}" > "$out/control.log" 2>&1 &
  pids+=($!)
fi
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
date -u +"ended %Y-%m-%dT%H:%M:%SZ; load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/README.txt"
export COLUMNS=200
"$airlab" --home "$out/team" leaderboard --session team > "$out/team-leaderboard.txt"
"$airlab" --home "$out/team" leaderboard --session team --json > "$out/team-leaderboard.json"
"$airlab" --home "$out/team" export --out "$out/team-export" > /dev/null
if [[ "${CONTROL:-1}" != 0 ]]; then
  "$airlab" --home "$out/control" leaderboard --session control > "$out/control-leaderboard.txt"
  "$airlab" --home "$out/control" leaderboard --session control --json \
    > "$out/control-leaderboard.json"
  "$airlab" --home "$out/control" export --out "$out/control-export" > /dev/null
  "$airlab" leaderboard --compare "team@$out/team" "control@$out/control" \
    --out "$out/compare" | tee "$out/compare.txt"
fi
echo "written under $out (team.log, control.log, *-leaderboard.*, compare/, *-export/)"
exit "$status"
