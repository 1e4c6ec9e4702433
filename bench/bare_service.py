"""The reference for bench_serving.py: a bare BentoML 1.4 service that loads the same churn booster Diamond
serves and answers each request with one `inplace_predict` over the requested customers' rows (the snapshot's
model inputs, read once into memory at start, as float32). It is set up as lean as Diamond's service (access
log and metrics off, `gc.freeze()` after loading: shared/facts.md; an async endpoint, so no thread hand-off,
as Diamond answers by id; BentoML's request timeout replaced by serving.traffic's, which does not keep each
request's objects for 60 s), so the ratio measures Diamond's own work.

    BENCH_BARE_DIR=folder bentoml serve bench.bare_service:Bare --port 3001

The folder holds churn.ubj (the booster), inputs.npy (float32 rows) and ids.json (their customer ids).
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import bentoml
import numpy as np
import xgboost as xgb

from serving import traffic

traffic.install()  # BentoML's request timeout without its per-request leak, as Diamond's (serving/traffic.py)


@bentoml.service(name="bare", logging={"access": {"enabled": False}}, metrics={"enabled": False})
class Bare:
    def __init__(self) -> None:
        folder = Path(os.environ["BENCH_BARE_DIR"])
        self.booster = xgb.Booster(model_file=str(folder / "churn.ubj"))
        self.booster.set_param({"nthread": 1})
        self.x = np.load(folder / "inputs.npy")
        self.index = {cid: i for i, cid in enumerate(json.loads((folder / "ids.json").read_text()))}
        gc.collect()
        gc.freeze()

    @bentoml.api(route="/predict")
    async def predict(self, customer_ids: list[str]) -> list[float]:
        """The booster's churn probability of each customer, by id, from one inplace_predict."""
        rows = [self.index[c] for c in customer_ids]
        return self.booster.inplace_predict(self.x[rows]).tolist()  # type: ignore[no-any-return]
