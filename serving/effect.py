"""The effect of acting on alerts (`diamond effect`): treated alerts against their held-out controls
(serving.control), on the outcomes whose window is complete (serving.outcomes, `mature`), per tier, alert
kind and playbook, per opening run and cumulative.

For a group with n1 treated (s1 saved) and n0 controls (s0 saved):

- save rates p1 = s1 / n1 and p0 = s0 / n0, each with its Wilson score interval;
- the difference p1 - p0 with Newcombe's hybrid score interval (his method 10, from the two Wilson
  intervals), which stays inside [-1, 1] and behaves on small groups and rates near 0 or 1;
- incremental customers saved = (p1 - p0) * n1, with the interval scaled the same way;
- incremental value retained = (mean value after, treated - mean value after, control) * n1, with a normal
  interval from the two standard errors (None below two outcomes in an arm);
- cost = n1 * the playbook's cost (`alerts.playbooks.<tier>.cost`; a tier without a playbook costs 0);
  ROI = (incremental value - cost) / cost (None at cost 0).

Treated means assigned to the alert arm (intention to treat), whatever was done with the alert. Pure
functions; `load` reads the stored outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from core.config import ConfigError
from serving import outcomes
from serving.config import AlertConfig
from serving.schema import alerts_table

if TYPE_CHECKING:
    from features.value import ValueTarget
    from training.tracking import MlflowConfig

Z = 1.959963984540054  # the two-sided 95 % normal quantile
GROUP = ("tier", "kind", "playbook")
ALL = "(all)"
REPORT_COLUMNS = [
    "scope",
    "run",
    "tier",
    "kind",
    "playbook",
    "owner",
    "treated",
    "treated_saved",
    "treated_rate",
    "treated_low",
    "treated_high",
    "control",
    "control_saved",
    "control_rate",
    "control_low",
    "control_high",
    "difference",
    "difference_low",
    "difference_high",
    "incremental_saved",
    "incremental_saved_low",
    "incremental_saved_high",
    "incremental_value",
    "incremental_value_low",
    "incremental_value_high",
    "cost",
    "roi",
    "pending",
]


def wilson(saved: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson's score interval for a proportion saved/n; (nan, nan) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    p = saved / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(s1: int, n1: int, s0: int, n0: int, z: float = Z) -> tuple[float, float, float]:
    """p1 - p0 and Newcombe's hybrid score interval for it (method 10); nan when an arm is empty."""
    if n1 <= 0 or n0 <= 0:
        return math.nan, math.nan, math.nan
    p1, p0 = s1 / n1, s0 / n0
    l1, u1 = wilson(s1, n1, z)
    l0, u0 = wilson(s0, n0, z)
    d = p1 - p0
    return d, d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)


def playbook_costs(config: AlertConfig, tiers: Sequence[str], file: str = "serving.yaml") -> dict[str, float]:
    """The cost of one alert of each tier: its playbook's `cost`; 0 for a tier without a playbook (nothing
    is done). A playbook without a cost is refused with the key named (the config refuses a negative one)."""
    out = {}
    for tier in tiers:
        book = config.playbooks.get(tier)
        if book is None:
            out[tier] = 0.0
            continue
        if book.cost is None:
            raise ConfigError(
                f"{file}: alerts.playbooks.{tier}.cost: missing; `diamond effect` needs the cost of one "
                f"alert worked with this playbook ({book.text!r}) to weigh it against the value it retains"
            )
        if book.cost < 0:  # refused when loaded; checked again for configs built in code
            raise ConfigError(f"{file}: alerts.playbooks.{tier}.cost: must be at least 0, got {book.cost}")
        out[tier] = float(book.cost)
    return out


def rule_costs(config: AlertConfig, file: str = "serving.yaml") -> dict[str, float]:
    """The cost of one alert of each rule with its own playbook (e.g. the win-back rule), by kind; such a
    playbook without a cost is refused with the key named."""
    out = {}
    for i, rule in enumerate(config.rules):
        if rule.playbook is None:
            continue
        if rule.playbook.cost is None:
            raise ConfigError(
                f"{file}: alerts.rules.{i}.playbook.cost: missing; `diamond effect` needs the cost of one "
                f"{rule.kind} alert worked with this playbook ({rule.playbook.text!r})"
            )
        out[rule.kind] = float(rule.playbook.cost)
    return out


NOBODY = "(nobody)"
"""The owner of an alert nobody took on."""


def load(engine: Engine) -> pd.DataFrame:
    """The stored outcomes of both arms (serving.outcomes.read), with `owner`: who took each alert on
    (NOBODY when nobody did; None for a control, which has no owner)."""
    frame = outcomes.read(engine)
    a = alerts_table
    with engine.connect() as conn:
        owners = dict(conn.execute(sa.select(a.c.id, a.c.owner)).all())
    treated = frame["arm"] == "treated"
    frame["owner"] = None
    frame.loc[treated, "owner"] = [owners.get(int(i)) or NOBODY for i in frame.loc[treated, "episode_id"]]
    return frame


def stored_report(
    engine: Engine, config: AlertConfig | None, file: str = "serving.yaml", by_run: bool = True
) -> pd.DataFrame:
    """`report` of a store's outcomes with the playbook costs of `config` (the alerts section; None: alerts
    are off, refused). What `diamond effect` prints and the dashboard's effect page shows."""
    if config is None:
        raise ConfigError(f"{file}: alerts are off; there is no effect to measure")
    frame = load(engine)
    tiers = sorted({str(t) for t in frame["tier"].dropna()} | set(config.playbooks))
    return report(frame, playbook_costs(config, tiers, file), by_run, rule_costs(config, file))


def report(
    frame: pd.DataFrame,
    costs: Mapping[str, float],
    by_run: bool = True,
    kind_costs: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """The effect table of these outcomes (serving.outcomes columns): one row per (tier, kind, playbook) and
    one "(all)" row, first over everything (scope `cumulative`, run None); when `frame` has an `owner`
    column, then one row per owner of the treated alerts (scope `owner`); with `by_run`, then for each
    opening run on its own (scope `run`) and for every run up to it (scope `through`). Only mature
    outcomes are compared; `pending` counts the rest. An alert costs its kind's cost in `kind_costs` (a
    rule's own playbook), else its tier's in `costs`; a tier missing from `costs` is refused.

    An owner's row compares the owner's alerts with the controls of the same (tier, kind) groups: who takes
    which alert is chosen by people, not drawn, so it describes, it does not measure an owner's effect."""
    f = frame.copy()
    if f.empty:
        return pd.DataFrame(columns=REPORT_COLUMNS)
    kind_costs = dict(kind_costs or {})
    unknown = sorted({str(t) for t in f.loc[~f["kind"].isin(list(kind_costs)), "tier"].dropna()} - set(costs))
    if unknown:
        raise ConfigError(f"alerts.playbooks: no cost known for tier(s) {unknown}")
    for col in GROUP:
        f[col] = f[col].astype(object).where(f[col].notna(), "")
    f["opened_at"] = pd.to_datetime(f["opened_at"])
    f["_cost"] = [
        kind_costs[str(k)] if str(k) in kind_costs else costs.get(str(t), 0.0)
        for k, t in zip(f["kind"], f["tier"], strict=True)
    ]
    parts = [_table(f, "cumulative", None)]
    if "owner" in f:
        parts.append(_owners(f))
    if by_run:
        for run in sorted(f["opened_at"].unique()):
            when = pd.Timestamp(run).to_pydatetime()
            parts.append(_table(f[f["opened_at"] == run], "run", when))
            parts.append(_table(f[f["opened_at"] <= run], "through", when))
    return pd.DataFrame([r for p in parts for r in p], columns=REPORT_COLUMNS)


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The report as JSON-ready dicts (None for missing numbers, ISO 8601 times)."""
    out = []
    for r in table.to_dict("records"):
        row: dict[str, Any] = {}
        for k, v in r.items():
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
                row[k] = None
            elif isinstance(v, pd.Timestamp) or hasattr(v, "isoformat"):
                row[k] = v.isoformat()
            elif isinstance(v, np.integer):
                row[k] = int(v)
            elif isinstance(v, np.floating):
                row[k] = float(v)
            else:
                row[k] = v
        out.append(row)
    return out


def value_line(target: ValueTarget, model_version: str | None) -> str:
    """What the incremental value (and every value_after) is in, in words, with whose target it is: the
    served model's `model_version` (None: no served model, so revenue). One wording for `diamond effect`
    (text and --html) and the dashboard's effect page."""
    served = f"the served model's, version {model_version}" if model_version else "no served model"
    return f"{target.text()} ({served}; value_after and incr. value measure it)"


LOGGED = (
    "treated",
    "treated_saved",
    "control",
    "control_saved",
    "treated_rate",
    "control_rate",
    "difference",
    "difference_low",
    "difference_high",
    "incremental_saved",
    "incremental_value",
    "cost",
    "roi",
    "pending",
)


def log_to_mlflow(
    mlcfg: MlflowConfig,
    table: pd.DataFrame,
    rates: pd.DataFrame | None = None,
    moves: pd.DataFrame | None = None,
    value_target: str | None = None,
) -> str:
    """One run in the `<experiment>-effect` experiment: the cumulative "(all)" row's numbers as metrics
    (missing ones left out) and the whole table as `effect.json`; the programme's indicators and the tier
    migration matrix when given (serving.indicators.log_to_mlflow); the value target the incremental value
    is measured in (revenue or margin) as the tag `value_target` when given. Returns the run id."""
    import json

    from mlflow.entities import Metric

    from core.clock import utc_now

    client = mlcfg.client()
    stamp = int(utc_now().timestamp() * 1000)
    rows = records(table)
    overall = next((r for r in rows if r["scope"] == "cumulative" and r["tier"] == ALL), {})
    run = client.create_run(
        mlcfg.experiment_id(client, f"{mlcfg.experiment}-effect"),
        run_name=f"effect {utc_now():%Y-%m-%d %H:%M}",
        tags={
            "runs": str(len({r["run"] for r in rows if r["run"] is not None})),
            **({"value_target": value_target} if value_target is not None else {}),
        },
    )
    metrics = [Metric(k, float(overall[k]), stamp, 0) for k in LOGGED if overall.get(k) is not None]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.log_text(run.info.run_id, json.dumps(rows, indent=1), "effect.json")
    if rates is not None or moves is not None:
        from serving import indicators

        empty = pd.DataFrame()
        indicators.log_to_mlflow(
            client,
            run.info.run_id,
            rates if rates is not None else empty,
            moves if moves is not None else empty,
        )
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


# --- helpers ------------------------------------------------------------------------------------------------


def _table(f: pd.DataFrame, scope: str, run: Any) -> list[dict[str, Any]]:
    rows = []
    for key, group in f.groupby(list(GROUP), sort=True):
        rows.append(_row(group, scope, run, {**dict(zip(GROUP, key, strict=True)), "owner": ALL}))
    rows.append(_row(f, scope, run, dict.fromkeys((*GROUP, "owner"), ALL)))
    return rows


def _owners(f: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per owner of treated alerts: their alerts against the controls of the same (tier, kind)."""
    treated = f[f["arm"] == "treated"]
    control = f[f["arm"] == "control"]
    rows = []
    for owner, mine in treated.groupby(treated["owner"].astype(str), sort=True):
        groups = set(zip(mine["tier"], mine["kind"], strict=True))
        same = control[[(t, k) in groups for t, k in zip(control["tier"], control["kind"], strict=True)]]
        keys = {**dict.fromkeys(GROUP, ALL), "owner": owner}
        rows.append(_row(pd.concat([mine, same]), "owner", None, keys))
    return rows


def _row(g: pd.DataFrame, scope: str, run: Any, keys: dict[str, Any]) -> dict[str, Any]:
    done = g[g["mature"].astype(bool) & (g["outcome"] != "pending")]
    t, c = done[done["arm"] == "treated"], done[done["arm"] == "control"]
    n1, n0 = len(t), len(c)
    s1, s0 = int((t["outcome"] == "saved").sum()), int((c["outcome"] == "saved").sum())
    l1, u1 = wilson(s1, n1)
    l0, u0 = wilson(s0, n0)
    d, dl, du = newcombe(s1, n1, s0, n0)
    v1, v0 = t["value_after"].astype(float), c["value_after"].astype(float)
    if n1 and n0:
        gain = (v1.mean() - v0.mean()) * n1
        se = math.sqrt(v1.var(ddof=1) / n1 + v0.var(ddof=1) / n0) if n1 > 1 and n0 > 1 else math.nan
        g_low, g_high = gain - Z * se * n1, gain + Z * se * n1
    else:
        gain = g_low = g_high = math.nan
    cost = float(t["_cost"].sum())
    roi = (gain - cost) / cost if cost > 0 and not math.isnan(gain) else math.nan
    return {
        "scope": scope,
        "run": run,
        **keys,
        "treated": n1,
        "treated_saved": s1,
        "treated_rate": s1 / n1 if n1 else math.nan,
        "treated_low": l1,
        "treated_high": u1,
        "control": n0,
        "control_saved": s0,
        "control_rate": s0 / n0 if n0 else math.nan,
        "control_low": l0,
        "control_high": u0,
        "difference": d,
        "difference_low": dl,
        "difference_high": du,
        "incremental_saved": d * n1,
        "incremental_saved_low": dl * n1,
        "incremental_saved_high": du * n1,
        "incremental_value": gain,
        "incremental_value_low": g_low,
        "incremental_value_high": g_high,
        "cost": cost,
        "roi": roi,
        "pending": int(len(g) - len(done)),
    }
