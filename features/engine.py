"""Which engine runs the feature builder and batch scoring: `engine.yaml` (in git, non-secret) or
`--engine` on the command line. DuckDB (one machine) is the default; Spark runs the same definitions on a
cluster (features.spark, docs/scale.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from core.config import ConfigError, FileSettings, OrEmpty, Section, load

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "engine.yaml"
CONFIG_ENV = "DIAMOND_ENGINE_CONFIG"
Engine = Literal["duckdb", "spark"]
ENGINES: tuple[Engine, ...] = get_args(Engine)


class SparkConfig(Section):
    """`spark:` where the Spark engine runs."""

    master: str | None = None  # local[N], spark://..., yarn; None: spark-submit's (or Databricks')
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)  # any Spark setting


class EngineConfig(FileSettings):
    """engine.yaml; the environment overrides any key (e.g. DIAMOND_ENGINE_SPARK__MASTER)."""

    model_config = SettingsConfigDict(env_prefix="DIAMOND_ENGINE_")

    engine: Engine = "duckdb"
    spark: Annotated[SparkConfig, OrEmpty] = SparkConfig()

    @classmethod
    def load(cls, path: str | Path | None = None, engine: str | None = None) -> EngineConfig:
        """engine.yaml (or `path`, or $DIAMOND_ENGINE_CONFIG), the environment on top; `engine` (the --engine
        option) wins."""
        config = load(cls, path, default=DEFAULT_PATH, env=CONFIG_ENV, what="engine config")
        if engine is None:
            return config
        if engine not in ENGINES:
            raise ConfigError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
        return config.model_copy(update={"engine": engine})

    def session(self) -> Any:
        """The SparkSession these settings describe (features.spark.session)."""
        from features.spark import session

        conf = {str(k): str(v) for k, v in self.spark.conf.items()}
        return session(self.spark.master, conf=conf)
