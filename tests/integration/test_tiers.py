"""The tier store: state, history and movements over runs, in real stores (a SQLite file and a PostgreSQL
database)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from serving.tier_store import tier_history, tier_movements, update_tiers
from tests.helpers.frames import T0, TIERS, by_id, raw_tiers


def test_update_tiers_stores_state_history_and_movements(engine: sa.Engine) -> None:
    update_tiers(engine, T0, raw_tiers(a="gold", b="gold", c="silver"), TIERS, demote_after=2)
    run2 = update_tiers(
        engine, T0 + timedelta(days=1), raw_tiers(a="silver", b="diamond", c="silver"), TIERS, 2
    )
    assert run2["tier"].tolist() == ["gold", "diamond", "silver"]
    assert run2["runs_below"].tolist() == [1, 0, 0]
    run3 = update_tiers(engine, T0 + timedelta(days=2), raw_tiers(a="bronze", b="gold", d="gold"), TIERS, 2)
    assert by_id(run3)["a"]["tier"] == "bronze"  # second run below gold
    assert by_id(run3)["b"]["tier"] == "diamond"  # first run below diamond: kept
    assert by_id(run3)["d"]["previous_tier"] is None

    history = tier_history(engine, "a")
    assert history["as_of"].tolist() == [T0, T0 + timedelta(days=1), T0 + timedelta(days=2)]
    assert history[["tier", "tier_raw", "runs_below"]].values.tolist() == [
        ["gold", "gold", 0],
        ["gold", "silver", 1],
        ["bronze", "bronze", 0],
    ]
    assert history["previous_tier"].tolist() == [None, "gold", "gold"]

    moves = tier_movements(engine, T0 + timedelta(days=1))
    assert moves.to_dict("records") == [
        {"previous_tier": "gold", "tier": "diamond", "direction": "promoted", "customers": 1}
    ]
    moves3 = tier_movements(engine, T0 + timedelta(days=2), include_new=True)
    assert moves3.to_dict("records") == [
        {"previous_tier": "gold", "tier": "bronze", "direction": "demoted", "customers": 1},
        {"previous_tier": None, "tier": "gold", "direction": "new", "customers": 1},
    ]
    assert tier_movements(engine, T0).empty  # the first run has no moves, only new customers
    with pytest.raises(KeyError):
        tier_movements(engine, T0 + timedelta(days=9))
    # c was not scored in run 3: its state stays as run 2 left it
    assert tier_history(engine, "c")["as_of"].tolist() == [T0, T0 + timedelta(days=1)]


def test_integer_ids_are_stored_as_text(engine: sa.Engine) -> None:
    update_tiers(engine, T0, pd.DataFrame({"customer_id": [7], "tier_raw": ["gold"]}), TIERS, 2)
    out = update_tiers(
        engine, T0 + timedelta(days=1), pd.DataFrame({"customer_id": [7], "tier_raw": ["silver"]}), TIERS, 2
    )
    assert out.loc[0, ["customer_id", "tier", "runs_below"]].tolist() == ["7", "gold", 1]


def test_rerunning_an_as_of_returns_the_stored_result_and_counts_nothing_twice(engine: sa.Engine) -> None:
    update_tiers(engine, T0, raw_tiers(a="gold", b="silver"), TIERS, demote_after=2)
    first = update_tiers(engine, T0 + timedelta(days=1), raw_tiers(a="silver", b="gold"), TIERS, 2)
    again = update_tiers(engine, T0 + timedelta(days=1), raw_tiers(b="gold", a="silver"), TIERS, 2)
    pd.testing.assert_frame_equal(again, first.iloc[[1, 0]].reset_index(drop=True))
    assert tier_history(engine, "a")["runs_below"].tolist() == [0, 1]  # not 2: the re-run did not count
    nxt = update_tiers(engine, T0 + timedelta(days=2), raw_tiers(a="gold", b="gold"), TIERS, 2)
    assert nxt["runs_below"].tolist() == [0, 0]

    with pytest.raises(ValueError, match="already applied"):  # same as_of, different raw tiers
        update_tiers(engine, T0 + timedelta(days=1), raw_tiers(a="bronze", b="gold"), TIERS, 2)
    with pytest.raises(ValueError, match="older than the latest"):
        update_tiers(engine, T0 + timedelta(hours=12), raw_tiers(a="bronze"), TIERS, 2)


def test_time_zones_are_normalised_to_utc(engine: sa.Engine) -> None:
    update_tiers(engine, pd.Timestamp("2024-06-01 02:00", tz="Europe/Berlin"), raw_tiers(a="gold"), TIERS, 2)
    assert tier_history(engine, "a")["as_of"].tolist() == [datetime(2024, 6, 1, 0, 0)]
    again = update_tiers(
        engine, "2024-06-01T00:00:00Z", raw_tiers(a="gold"), TIERS, 2
    )  # same instant: a re-run
    assert again["tier"].tolist() == ["gold"]
    assert len(tier_history(engine, "a")) == 1


def test_a_failure_mid_write_leaves_nothing_behind(engine: sa.Engine) -> None:
    update_tiers(engine, T0, raw_tiers(a="gold", b="gold"), TIERS, demote_after=1)
    run2 = T0 + timedelta(days=1)
    # a stray history row for (b, run 2): the run's history insert violates the primary key after the run
    # ledger and the run's temporary result table were written; the state (a demoted, new customer c) never is
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tier_history (customer_id, as_of, tier, tier_raw, previous_tier, runs_below) "
                "VALUES ('b', :t, 'gold', 'gold', NULL, 0)"
            ).bindparams(sa.bindparam("t", run2, type_=sa.DateTime)),
        )
    with pytest.raises(sa.exc.IntegrityError):
        update_tiers(engine, run2, raw_tiers(a="silver", b="gold", c="bronze"), TIERS, 1)
    with engine.connect() as conn:
        state = conn.execute(sa.text("SELECT customer_id, tier, runs_below FROM tier_state ORDER BY 1")).all()
        runs = conn.execute(sa.text("SELECT COUNT(*) FROM tier_runs")).scalar()
    assert [tuple(r) for r in state] == [("a", "gold", 0), ("b", "gold", 0)]
    assert runs == 1
    assert tier_history(engine, "a")["as_of"].tolist() == [T0]
    assert tier_history(engine, "c").empty
    with pytest.raises(KeyError):
        tier_movements(engine, run2)

    with engine.begin() as conn:  # once the stray row is gone the same run applies normally
        delete = sa.text("DELETE FROM tier_history WHERE customer_id = 'b' AND as_of = :t")
        conn.execute(delete.bindparams(sa.bindparam("t", run2, type_=sa.DateTime)))
    out = update_tiers(engine, run2, raw_tiers(a="silver", b="gold", c="bronze"), TIERS, 1)
    assert out["tier"].tolist() == ["silver", "gold", "bronze"]
