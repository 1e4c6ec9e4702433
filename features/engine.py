"""Which engine runs the feature builder and batch scoring: `engine.yaml` (in git, non-secret) or
`--engine` on the command line. DuckDB (one machine) is the default; Spark runs the same definitions on a
cluster (features.spark, docs/scale.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.config import ConfigError, read_settings

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "engine.yaml"
CONFIG_ENV = "DIAMOND_ENGINE_CONFIG"
ENGINES = ("duckdb", "spark")


@dataclass(frozen=True)
class EngineConfig:
    engine: str = "duckdb"
    spark: dict[str, Any] = field(default_factory=dict)  # master (None: spark-submit's), conf {key: value}

    @classmethod
    def load(cls, path: str | Path | None = None, engine: str | None = None) -> EngineConfig:
        """engine.yaml (or `path`, or $DIAMOND_ENGINE_CONFIG); `engine` (the --engine option) wins."""
        file = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_PATH)
        raw = read_settings(file, bool(path), ("engine", "spark"), "engine config") or {}
        chosen = engine or raw.get("engine", cls.engine)
        if chosen not in ENGINES:
            raise ConfigError(f"engine {chosen!r}: expected one of {', '.join(ENGINES)}")
        spark = raw.get("spark") or {}
        if not isinstance(spark, dict) or set(spark) - {"master", "conf"}:
            raise ConfigError(f"{file}: 'spark' takes 'master' and 'conf' only")
        return cls(chosen, spark)

    def session(self) -> Any:
        """The SparkSession these settings describe (features.spark.session)."""
        from features.spark import session

        conf = {str(k): str(v) for k, v in (self.spark.get("conf") or {}).items()}
        return session(self.spark.get("master"), conf=conf)
