"""Uplift ranking vs P x value at equal capacity, on finished `diamond simulate` folders (docs/effect.md,
Uplift ranking: measured).

For each folder (its world is re-drawn from simulation.json's customers and seed; the actions taken are the
treated episodes worked, from potential_outcomes.parquet):

- every episode's *expected* true effect (serving.simulation.expected_outcomes: the world's mean over the
  dropout draw, future complaints and purchases, given the customer's state at the opening run), beside the
  realised one (one draw);
- for each run i from the third on, every variant is fitted on the outcomes of runs 0..i-1 (all mature when
  run i scores: the horizon is the period) and ranks run i's candidates (alerts and controls); at each
  capacity k, the same k for every ranking, the sum of the top k's expected (and realised) incremental value;
- Qini and AUUC of each variant on run i's realised outcomes.

Variants are picked on the *earlier* runs (`--pick-runs`, the first rankable ones) and reported on the later
ones, per world and in total. Usage:

    python -m bench.bench_uplift SIM_DIR [SIM_DIR ...] [--capacities 100,250,500] [--pick-runs 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.datasets.world import ACTION_DELAY, World, actions_frame
from serving import outcomes, simulation, store
from training import uplift

COST = 5.0  # the playbook cost of the measured configs; the same for every alert, so it never reorders

REG = {"max_depth": 2, "min_child_weight": 50, "eta": 0.05, "lambda": 10.0}
REG2 = {"max_depth": 2, "min_child_weight": 200, "eta": 0.03, "lambda": 50.0}

VARIANTS: dict[str, dict[str, Any]] = {
    "t": {"learner": "t"},
    "x": {"learner": "x"},
    "x-propensity": {"learner": "x", "propensity": 0.5},
    "x-regularised": {
        "learner": "x",
        "propensity": 0.5,
        "params": {"max_depth": 2, "min_child_weight": 50, "eta": 0.05, "lambda": 10.0},
    },
    "t-value": {"learner": "t", "outcome": "value"},
    "x-value-regularised": {
        "learner": "x",
        "outcome": "value",
        "propensity": 0.5,
        "params": {"max_depth": 2, "min_child_weight": 50, "eta": 0.05, "lambda": 10.0},
    },
    "x-shrunk-2k": {"learner": "x", "propensity": 0.5, "prior_outcomes": 2000.0},
    "x-shrunk-10k": {"learner": "x", "propensity": 0.5, "prior_outcomes": 10000.0},
    "x-reg-shrunk-10k": {
        "learner": "x",
        "propensity": 0.5,
        "prior_outcomes": 10000.0,
        "params": {"max_depth": 2, "min_child_weight": 50, "eta": 0.05, "lambda": 10.0},
    },
    "x-value-shrunk-10k": {"learner": "x", "outcome": "value", "propensity": 0.5, "prior_outcomes": 10000.0},
    "x-reg-shrunk-30k": {"learner": "x", "propensity": 0.5, "prior_outcomes": 30000.0, "params": REG},
    "x-reg-shrunk-100k": {"learner": "x", "propensity": 0.5, "prior_outcomes": 100000.0, "params": REG},
    "x-reg2": {"learner": "x", "propensity": 0.5, "params": REG2},
    "x-reg2-shrunk-10k": {"learner": "x", "propensity": 0.5, "prior_outcomes": 10000.0, "params": REG2},
    "x-reg2-shrunk-30k": {"learner": "x", "propensity": 0.5, "prior_outcomes": 30000.0, "params": REG2},
    "t-reg2-shrunk-10k": {"learner": "t", "prior_outcomes": 10000.0, "params": REG2},
}


def load(folder: Path) -> tuple[pd.DataFrame, dict[pd.Timestamp, pd.DataFrame], pd.DataFrame]:
    """(episodes with realised and expected effects, inputs by run, mature outcomes with their inputs)."""
    from diamond.flows import uplift_frame

    meta = json.loads((folder / "simulation.json").read_text(encoding="utf-8"))
    world = World.draw(int(meta["customers"]), int(meta["seed"]))
    pot = pd.read_parquet(folder / "potential_outcomes.parquet")
    pot["opened_at"] = pd.to_datetime(pot["opened_at"])
    pot = pot.drop(columns=[c for c in pot.columns if c.startswith("expected_")])  # recomputed below
    acted = pot[pot["acted"].astype(bool)]
    actions = actions_frame(acted["customer_id"].tolist(), (acted["opened_at"] + ACTION_DELAY).tolist())
    exp = simulation.expected_outcomes(
        world, actions, pot[["customer_id", "opened_at"]], int(meta["period_days"])
    )
    pot = pd.concat([pot, exp.drop(columns=["customer_id", "opened_at"])], axis=1)
    runs = sorted(pot["opened_at"].unique())
    inputs = {
        pd.Timestamp(r): pd.read_parquet(folder / f"inputs_{pd.Timestamp(r):%Y%m%d}.parquet") for r in runs
    }
    frame = uplift_frame(outcomes.read(store.engine(f"sqlite:///{folder / 'diamond.db'}")), inputs)
    return pot, inputs, frame


def priority_of(model: uplift.UpliftModel, cand: pd.DataFrame) -> pd.Series:
    tau = model.predict(cand)
    value = tau if model.outcome == "value" else tau * cand["predicted_value"].to_numpy(dtype=np.float64)
    return pd.Series(value - COST, index=cand.index)


def measure(folder: Path, capacities: list[int], variants: dict[str, dict[str, Any]]) -> pd.DataFrame:
    pot, inputs, frame = load(folder)
    runs = sorted(pot["opened_at"].unique())
    rows = []
    for i, r in enumerate(runs):
        if i < 2:
            continue
        learn = frame[frame["opened_at"] < r]
        cand = pot[pot["opened_at"] == r].reset_index(drop=True)
        cand = cand.merge(inputs[pd.Timestamp(r)], on="customer_id", how="left")
        judged = frame[frame["opened_at"] == r].reset_index(drop=True)
        rankings: dict[str, pd.Series] = {
            "p x value": cand["value_at_risk"],
            "oracle (expected)": cand["expected_effect_value"],
        }
        scores: dict[str, dict[str, float]] = {}
        for name, spec in variants.items():
            model = uplift.fit(learn, seed=0, **spec)
            rankings[name] = priority_of(model, cand)
            if len(judged):
                scores[name] = uplift.evaluate(model, judged)
        if len(judged):
            base = uplift.baseline(judged) or {}
            scores["p x value"] = {"qini": base.get("qini", np.nan), "auuc": base.get("auuc", np.nan)}
        table = simulation.compare(cand, rankings, capacities)
        for row in table.to_dict("records"):
            s = scores.get(row["ranking"], {})
            rows.append(
                {
                    "world": folder.name,
                    "run": f"{pd.Timestamp(r):%Y-%m-%d}",
                    "run_index": i,
                    "learned_from": len(learn),
                    "candidates": len(cand),
                    **row,
                    "qini": s.get("qini", np.nan),
                    "auuc": s.get("auuc", np.nan),
                }
            )
        print(f"{folder.name} {pd.Timestamp(r):%Y-%m-%d}: {len(learn)} outcomes learned", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--capacities", default="100,250,500")
    ap.add_argument("--pick-runs", type=int, default=2, help="rankable runs used to pick (the earliest)")
    ap.add_argument("--out", type=Path, default=None, help="write every row as CSV")
    ap.add_argument("--variants", default=None, help="comma-separated names of VARIANTS (default: all)")
    args = ap.parse_args()
    caps = [int(c) for c in args.capacities.split(",")]
    chosen = VARIANTS if args.variants is None else {v: VARIANTS[v] for v in args.variants.split(",")}
    table = pd.concat([measure(f, caps, chosen) for f in args.folders], ignore_index=True)
    if args.out:
        table.to_csv(args.out, index=False)
    first = table["run_index"].min()
    table["part"] = np.where(table["run_index"] < first + args.pick_runs, "pick", "report")
    pd.set_option("display.width", 200)
    for part in ("pick", "report"):
        sub = table[table["part"] == part]
        print(f"\n== {part} runs: expected incremental value of the top k, summed over runs and worlds")
        print(
            sub.pivot_table(
                index="ranking", columns="k_capacity", values="expected_value", aggfunc="sum"
            ).round(0)
        )
        print(f"-- {part}: realised incremental value (one draw)")
        print(sub.pivot_table(index="ranking", columns="k_capacity", values="value", aggfunc="sum").round(0))
        print(f"-- {part}: mean Qini / AUUC on the run's realised outcomes")
        first_k = sub[sub["k_capacity"] == caps[0]]
        print(first_k.groupby("ranking")[["qini", "auuc"]].mean().round(5))
    report = table[table["part"] == "report"]
    print("\n== report runs, per world: expected value of the top k")
    print(
        report.pivot_table(
            index=["world", "ranking"], columns="k_capacity", values="expected_value", aggfunc="sum"
        ).round(0)
    )


if __name__ == "__main__":
    main()
