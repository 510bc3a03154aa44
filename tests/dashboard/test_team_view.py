"""The dashboard's team view reads the team's state through the existing read APIs, on a
read-only store, and the Researcher's Optuna studies with Optuna's own API."""

from __future__ import annotations

import pytest

from airlab.settings import get_settings
from airlab.store import Store


def test_team_view_on_a_read_only_store_shows_ideas_and_the_researchers_study(
        db_url: str) -> None:
    pytest.importorskip("optuna")
    from airlab.agents.researcher import Researcher
    from airlab.agents.tuning import study_name
    from airlab.dashboard.team_view import STUDY_PREFIX, team_view

    assert study_name("muon").startswith(STUDY_PREFIX)  # the names the view recognises
    s = Store(db_url)
    Researcher(s, get_settings(), seed=3).propose(idea="muon")  # a study with one trial
    s.close()
    ro = Store(db_url, readonly=True)
    view = team_view(ro)
    assert "errors" not in view, view.get("errors")
    [study] = view["optuna"]["studies"]
    assert study["name"] == study_name("muon") and study["idea"] == "muon"
    assert study["trials"] == 1 and study["direction"] == "maximize"
    ideas = {i["name"]: i for i in view["ideas"]["ideas"]}
    assert len(ideas) >= 50 and ideas["muon"]["status"] == "untested"
    assert ideas["muon"]["prediction"] and ideas["muon"]["title"]
    assert view["ideas"]["record"]["scored"] == 0
    assert view["sprints"]["current"] is None and view["leaderboard"] == []


def test_team_view_of_an_empty_lab_has_no_studies(db_url: str) -> None:
    from airlab.dashboard.team_view import studies_view

    Store(db_url).close()
    got = studies_view(Store(db_url, readonly=True))
    assert got["studies"] == [] and "no Optuna study" in got["note"]
