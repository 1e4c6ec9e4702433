"""The scoring artefact: everything serving needs to score a customer, saved as one folder.

    scoring.json   feature set, model columns (the churn booster's; `value_columns`, the value booster's,
                   when a churn model at H keeps columns value does not: training.design.churn_columns),
                   horizons, category levels, churn stacker and RFM reference,
                   value objective and target (revenue or margin, with the costs-to-serve it
                   subtracted: features.value), horizon maps, tier thresholds, training metrics, the drift
                   reference (training.drift: the inputs' and scores' distributions at T), and the
                   time-to-churn spec (training.curve), absent in models trained before it (no curve;
                   a `cold_start` key that models of 2026-12-02 carry is ignored: that model was
                   measured and not served, docs/training.md "Cold start")
    churn.ubj      the churn booster (XGBoost's own binary format)
    value.ubj      the value booster
    contract.ubj   the cancellation hazard booster of the customers under contract (training.contract), when
                   the history has subscribers; scoring.json's "contract" holds the rest of that model
                   and "levels" the recalibrated levels (training.levels). Both keys are optional: an
                   artefact without them scores as before.

`serving/` loads it (from the MLflow registry, training.registry) and calls `score`; it never re-implements
an encoding, a column order or a threshold. The same folder is logged as an MLflow pyfunc model, so Spark's
`mlflow.pyfunc.spark_udf` and `mlflow models` can score feature rows with it too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from features.build import build_scoring_rows
from features.history import History
from features.sets import FeatureSetError, get_feature_set
from features.value import REVENUE, ValueTarget
from training.contract import CONTRACT, CONTRACT_BOOSTER, SILENCE, ContractModel, under_contract
from training.curve import HORIZONS, CurveSpec
from training.levels import Levels
from training.models import ChurnModel, Encoder, ValueModel
from training.rfm import RfmRank
from training.tiers import assign_tiers

FORMAT = 1  # bumped when scoring.json changes incompatibly


def check_compatible(feature_set: str, columns: list[str], where: str) -> None:
    """Refuse a model this code cannot build rows for: an unknown feature set (trained by a newer or older
    Diamond), or columns that set does not produce."""
    try:
        fs = get_feature_set(feature_set)
    except FeatureSetError as exc:
        raise FeatureSetError(f"{where}: incompatible model: {exc}") from None
    foreign = [c for c in columns if c not in fs.features and not (fs.attributes and c.startswith("attr_"))]
    if foreign:
        raise FeatureSetError(
            f"{where}: incompatible model: columns {foreign[:5]} are not in feature set {fs.key}"
        )


@dataclass
class ScoringArtefact:
    feature_set: str  # e.g. rfm_v1: the versioned set the rows must be built with
    columns: list[str]  # model inputs, in order
    cutoff: datetime  # the training cutoff T
    label_horizon_days: int  # h: what the boosters learned
    horizon_days: int  # H: what predictions answer for
    churn: ChurnModel
    value: ValueModel
    tiers: dict[str, float]  # tier name -> lowest predicted value in it, best tier first
    metrics: dict[str, float] = field(default_factory=dict)
    btyd_params: dict[str, list[float]] | None = None  # BG/NBD + Gamma-Gamma fitted at T (features.build)
    drift_reference: dict[str, dict[str, Any]] | None = None  # training.drift.reference at T
    curve: CurveSpec | None = None  # time to churn (training.curve); None: an older model, no curve
    contract: ContractModel | None = None  # cancellation hazard of the customers under contract
    levels: Levels | None = None  # recalibrated churn and value levels (training.levels)
    value_target: ValueTarget = REVENUE  # what predicted_value measures (features.value): revenue or margin

    def feature_rows(self, history: History, as_of: datetime, parts: int | None = None) -> pd.DataFrame:
        """Model inputs for every customer eligible at `as_of`: the training feature set, BTYD over H with
        the parameters fitted at training time. Batch and online scoring both come through here; `parts`
        as in features.build.build_features."""
        table = build_scoring_rows(
            history, as_of, self.feature_set, self.horizon_days, self.btyd_params, parts
        )
        return table.to_pandas()

    def matrix(self, rows: pd.DataFrame) -> xgb.DMatrix:
        """The model inputs of `rows` (`columns`: the churn booster's), built once for both boosters when
        they share columns and encodings."""
        return self.churn.encoder.matrix(rows)

    def value_matrix(self, rows: pd.DataFrame, dm: xgb.DMatrix | None = None) -> xgb.DMatrix:
        """The value booster's inputs of `rows`: `dm` (the churn booster's) when they share columns, else
        its own (a churn model at H keeps some columns value never sees: `churn_keep_features`)."""
        if dm is not None and self.value_positions is None:
            return dm
        return self.value.encoder.matrix(rows)

    @property
    def value_positions(self) -> list[int] | None:
        """Where the value booster's columns sit in `columns` (None: the same columns, in order), for
        callers that hold the inputs as one float matrix (serving.champion)."""
        own = self.value.encoder.columns
        return None if own == self.columns else [self.columns.index(c) for c in own]

    def score(self, rows: pd.DataFrame, dm: xgb.DMatrix | None = None) -> pd.DataFrame:
        """churn_probability and predicted_value over H, value_at_risk and tier, for feature rows built with
        this artefact's feature set at horizon H."""
        dm = dm or self.matrix(rows)
        p = self.churn.predict(rows, dm)
        p, v = self.finish(rows, p, self.value.predict(rows, self.value_matrix(rows, dm)))
        return pd.DataFrame(
            {
                "customer_id": rows["customer_id"].to_numpy(),
                "churn_probability": p,
                "predicted_value": v,
                "value_at_risk": p * v,
                "tier": assign_tiers(v, self.tiers),
                "churn_model": self.churn_models(rows),
            },
            index=rows.index,
        )

    def churn_curve(
        self, rows: pd.DataFrame, probability: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """P(churned by t) for t in training.curve.HORIZONS and the expected days to churn of `rows`, from
        their P(churn over H); customers under contract (when the artefact has a contract model) get the
        cancellation hazard's own curve (training.contract: P(cancel within t) from its monthly hazards,
        equal to their P(churn over H) at H). None for a model without a curve spec (trained before there
        was one)."""
        if self.curve is None:
            return None
        curve, days = self.curve.apply(probability, rows, self.horizon_days)
        if self.contract is not None and len(rows):  # customers under contract: their own monthly hazards
            mask = self.contract.applies(rows)
            if mask.any():
                within = [t for t in HORIZONS if t <= self.horizon_days]
                points, expected = self.contract.curve(rows.loc[mask], within)
                filled = np.full((int(mask.sum()), len(HORIZONS)), np.nan)  # past H: null, as for everyone
                filled[:, : len(within)] = points
                curve, days = curve.copy(), days.copy()
                curve[mask], days[mask] = filled, expected
        return curve, days

    def finish(self, rows: pd.DataFrame, p: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The purchase-silence P(churn) and value over H of `rows` (the boosters and horizon maps) turned
        into the answers: customers under contract get the contract model's P(cancel within H), everybody
        else the recalibrated silence probability; values get the recalibrated level. The identity for an
        artefact with neither (older ones). Callers that compute the boosters' outputs themselves (the
        served snapshot, serving.champion) come through here too."""
        p = np.asarray(p, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        if self.levels is not None:
            held = None
            if self.levels.contract_mode is not None and len(rows):
                held = under_contract(rows, self.levels.contract_mode)
            p, v = self.levels.churn(p, held), self.levels.value(v)
        if self.contract is not None and len(rows):
            mask = self.contract.applies(rows)
            if mask.any():
                p = p.copy()
                p[mask] = self.contract.predict(rows.loc[mask])
        return p, v

    @property
    def contract_only_columns(self) -> list[str]:
        """Inputs of the contract model that the churn and value boosters do not use (the subscription
        tenure): reasons may name them (serving.scoring)."""
        if self.contract is None:
            return []
        return [c for c in self.contract.encoder.columns if c not in self.columns]

    def churn_models(self, rows: pd.DataFrame) -> np.ndarray:
        """Which model scored each row: 'contract_hazard' (under contract, the hazard), 'contract_booster'
        (under contract, the churn booster on H-day cancellations with its own level: `contract.scorer`)
        or 'purchase_silence'."""
        if self.contract is not None:
            return np.where(self.contract.applies(rows), CONTRACT, SILENCE).astype(object)
        mode = self.levels.contract_mode if self.levels is not None else None
        if mode is not None and len(rows):
            return np.where(under_contract(rows, mode), CONTRACT_BOOSTER, SILENCE).astype(object)
        return np.full(len(rows), SILENCE, dtype=object)

    def save(self, folder: str | Path) -> Path:
        """Write the folder atomically: a half-written artefact never appears under `folder`."""
        target = Path(folder)
        if target.exists():
            raise FileExistsError(f"{target} exists; choose a new folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".artefact-", dir=target.parent))
        try:
            self.churn.booster.save_model(tmp / "churn.ubj")
            self.value.booster.save_model(tmp / "value.ubj")
            if self.value.buyer is not None:
                self.value.buyer.save_model(tmp / "value_buyer.ubj")
            if self.contract is not None:
                self.contract.booster.save_model(tmp / "contract.ubj")
            (tmp / "scoring.json").write_text(json.dumps(self._spec(), indent=1), encoding="utf-8")
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def load(cls, folder: str | Path) -> ScoringArtefact:
        folder = Path(folder)
        spec_file = folder / "scoring.json"
        if not spec_file.exists():
            raise FileNotFoundError(f"{folder}: not a scoring artefact (no scoring.json)")
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
        if spec.get("format") != FORMAT:
            raise ValueError(
                f"{spec_file}: format {spec.get('format')!r}, this Diamond reads format {FORMAT}"
            )
        check_compatible(spec["feature_set"], spec["columns"], str(spec_file))
        encoder = Encoder(spec["columns"], spec["categories"])
        own = spec.get("value_columns")  # absent: value shares the churn booster's columns
        value_encoder = (
            encoder
            if own is None
            else Encoder(own, {k: v for k, v in spec["categories"].items() if k in own})
        )
        churn_booster, value_booster = xgb.Booster(), xgb.Booster()
        churn_booster.load_model(folder / "churn.ubj")
        value_booster.load_model(folder / "value.ubj")
        buyer = None
        if spec["value"].get("hurdle"):
            buyer = xgb.Booster()
            buyer.load_model(folder / "value_buyer.ubj")
        for b in (churn_booster, value_booster, buyer):
            if b is not None:
                b.set_param({"nthread": 1})
        c, v = spec["churn"], spec["value"]
        contract = None
        if spec.get("contract") is not None:
            contract_booster = xgb.Booster()
            contract_booster.load_model(folder / "contract.ubj")
            contract_booster.set_param({"nthread": 1})
            contract = ContractModel.from_dict(spec["contract"], contract_booster)
        levels = Levels.from_dict(spec["levels"]) if spec.get("levels") is not None else None
        return cls(
            feature_set=spec["feature_set"],
            columns=spec["columns"],
            cutoff=datetime.fromisoformat(spec["cutoff"]),
            label_horizon_days=spec["label_horizon_days"],
            horizon_days=spec["horizon_days"],
            churn=ChurnModel(
                churn_booster,
                encoder,
                RfmRank.from_dict(c["rfm"]),
                tuple(c["stack"]),
                tuple(c["horizon_map"]),
                c.get("label_days"),
            ),
            value=ValueModel(value_booster, value_encoder, v["objective"], tuple(v["horizon_map"]), buyer),
            tiers=spec["tiers"],
            metrics=spec.get("metrics", {}),
            btyd_params=spec.get("btyd_params"),
            drift_reference=spec.get("drift_reference"),
            curve=CurveSpec.from_dict(spec["curve"]) if spec.get("curve") else None,
            contract=contract,
            levels=levels,
            value_target=ValueTarget.from_dict(v),  # no target recorded: revenue
        )

    def _spec(self) -> dict[str, Any]:
        churn: dict[str, Any] = {
            "stack": list(self.churn.stack),
            "horizon_map": list(self.churn.horizon_map),
            "rfm": self.churn.rfm.to_dict(),
        }
        if self.churn.label_days is not None:  # optional: an artefact without it is written as before
            churn["label_days"] = self.churn.label_days
        spec = {
            "format": FORMAT,
            "feature_set": self.feature_set,
            "columns": self.columns,
            "categories": self.churn.encoder.categories,
            "cutoff": self.cutoff.isoformat(),
            "label_horizon_days": self.label_horizon_days,
            "horizon_days": self.horizon_days,
            "churn": churn,
            "value": {
                "objective": self.value.objective,
                "horizon_map": list(self.value.horizon_map),
                **self.value_target.to_dict(),  # target, cost_to_serve
                # optional: an artefact without it (a single value booster) is written as before
                **({"hurdle": True} if self.value.buyer is not None else {}),
            },
            "tiers": self.tiers,
            "metrics": self.metrics,
            "btyd_params": self.btyd_params,
            "drift_reference": self.drift_reference,
            "curve": self.curve.to_dict() if self.curve is not None else None,
        }
        if self.value_positions is not None:  # optional keys: an artefact without them is written as before
            spec["value_columns"] = self.value.encoder.columns
        if self.contract is not None:
            spec["contract"] = self.contract.to_dict()
        if self.levels is not None:
            spec["levels"] = self.levels.to_dict()
        return spec
