"""Generated technique code: the lab's git repository of attempts, and the registry that finds
the file of a switch the model wrote in an earlier sprint.

* :func:`commit_technique`: every attempt of the model's Coder is a commit on branch
  ``sprint/<session>/<n>`` of the bare repository ``<home>/techniques.git``.
* :func:`generated_files`, :func:`technique_files_for`, :func:`attach_technique_files`: a stack
  or a recipe that uses a generated switch names its file in the spec (so its runs happen in
  the sandbox), also after a restart: the files are found from the stored sprints.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airlab.agents.architect import Design
    from airlab.store import Store

GIT_REPO = "techniques.git"


def _one_line(text: object, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s[:limit] + ("..." if len(s) > limit else "")


# ============================================================================= git

def _git(args: Sequence[str], repo: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo),
           "GIT_AUTHOR_NAME": "airlab", "GIT_AUTHOR_EMAIL": "airlab@localhost",
           "GIT_COMMITTER_NAME": "airlab", "GIT_COMMITTER_EMAIL": "airlab@localhost",
           "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C"}
    return subprocess.run(["git", "--git-dir", str(repo), *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def commit_technique(home: Path, branch: str, files: Mapping[str, str], message: str
                     ) -> tuple[str | None, str]:
    """Commit ``files`` (name -> text) as the tree of a new commit on ``branch`` of the bare
    repository ``<home>/techniques.git`` (created on first use), on top of the branch's last
    commit, so the branch's history shows each attempt as a reviewable diff. Plumbing only:
    no working tree, so concurrent sprints never disturb each other's files.

    Returns (commit sha, where) or (None, why not) when git is missing or fails."""
    if shutil.which("git") is None:
        return None, "git not found: the generated technique is stored but not committed"
    repo = Path(home) / GIT_REPO
    try:
        if not (repo / "HEAD").exists():
            repo.parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run(["git", "init", "--bare", "-q", str(repo)], capture_output=True,
                               text=True, timeout=60, check=False)
            if r.returncode != 0:
                return None, f"git init failed: {_one_line(r.stderr)}"
        ref = f"refs/heads/{branch}"
        if _git(["check-ref-format", ref], repo).returncode != 0:
            return None, f"'{branch}' is not a valid git branch name"
        parent = _git(["rev-parse", "--verify", "-q", ref], repo)
        entries = []
        for name, text in sorted(files.items()):
            blob = _git(["hash-object", "-w", "--stdin"], repo, text)
            if blob.returncode != 0:
                return None, f"git hash-object failed: {_one_line(blob.stderr)}"
            entries.append(f"100644 blob {blob.stdout.strip()}\t{name}\n")
        tree = _git(["mktree"], repo, "".join(entries))
        if tree.returncode != 0:
            return None, f"git mktree failed: {_one_line(tree.stderr)}"
        cmd = ["commit-tree", tree.stdout.strip(), "-m", message]
        if parent.returncode == 0:
            cmd += ["-p", parent.stdout.strip()]
        commit = _git(cmd, repo)
        if commit.returncode != 0:
            return None, f"git commit-tree failed: {_one_line(commit.stderr)}"
        sha = commit.stdout.strip()
        upd = _git(["update-ref", ref, sha], repo)
        if upd.returncode != 0:
            return None, f"git update-ref failed: {_one_line(upd.stderr)}"
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"git failed: {_one_line(e)}"
    return sha, f"{repo} branch {branch}"



# ============================================================================= the registry


def generated_files(store: Store) -> dict[str, str]:
    """Switch -> stored file of every generated technique that passed its check, from the
    sprints' records (the latest sprint wins): how a later sprint finds the code of a winner
    the model wrote, also after a restart."""
    from airlab.store import team as team_store

    out: dict[str, str] = {}
    for r in team_store.list_sprints(store):
        code = (r.record.llm.code if r.record.llm is not None else None) or {}
        if code.get("ok") and code.get("path") and Path(code["path"]).is_file():
            out[str(code["switch"])] = str(code["path"])
    return out


def technique_files_for(store: Store, uses: Sequence[str], *, allow_unsafe: bool = False
                        ) -> list[str]:
    """The generated technique files the switches ``uses`` need, registered in this process
    (stand-ins described in the sandbox) so that specs using them resolve; [] when every
    switch is built in."""
    from airlab.techniques import TECHNIQUES
    from airlab.techniques.contract import FILES, register_technique_files

    found: set[str] = set()
    gen: dict[str, str] | None = None
    for u in dict.fromkeys(uses):
        if u in FILES:
            found.add(str(FILES[u]))
        elif u not in TECHNIQUES:
            gen = generated_files(store) if gen is None else gen
            if u in gen:
                found.add(gen[u])
    paths = sorted(found)
    if paths:
        register_technique_files([Path(p) for p in paths], allow_unsafe=allow_unsafe)
    return paths


def attach_technique_files(design: Design, store: Store) -> Design:
    """The design with ``techniques`` naming the generated files its arms use (a stack or a
    recipe built on a switch the model wrote), so that its runs happen in the sandbox."""
    import dataclasses

    from airlab.spec import ExperimentSpec

    spec = design.spec
    paths = technique_files_for(store, [u for a in spec.all_arms for u in a.use])
    missing = [p for p in paths if p not in spec.techniques]
    if not missing:
        return design
    data = spec.to_dict()
    data["techniques"] = [*spec.techniques, *missing]
    return dataclasses.replace(design, spec=ExperimentSpec.model_validate(data))
