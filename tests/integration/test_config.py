"""Typed config (core.config): every YAML file parsed once into frozen pydantic models that refuse unknown
keys, the environment on top, and one ConfigError whose message names the file, the dotted key and, for a
value from the environment, the variable. Real files in tmp_path; the real `diamond` command for the exit
code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.config import ConfigError
from features.config import DatasetConfig
from features.engine import EngineConfig
from serving.config import ServingConfig
from tests.helpers import run_diamond
from training.config import TrainingConfig
from training.tracking import MlflowConfig
from training.tuning import SPACE

OVERRIDES = (
    "DIAMOND_STORE_URL",
    "MLFLOW_TRACKING_URI",
    "DIAMOND_SERVING_CONFIG",
    "DIAMOND_MLFLOW_CONFIG",
    "DIAMOND_ENGINE_CONFIG",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No override from the test session (conftest points the stores at a throwaway folder) or the shell."""
    import os

    for name in os.environ:
        if name in OVERRIDES or name.startswith(
            ("DIAMOND_SERVING_", "DIAMOND_TRAINING_", "DIAMOND_ENGINE_", "DIAMOND_MLFLOW_")
        ):
            monkeypatch.delenv(name)


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _message(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    return str(exc.value)


# --- the five typo cases, each naming the file and the key --------------------------------------------------


def test_an_unknown_key_names_the_file_the_key_and_the_known_keys(tmp_path: Path) -> None:
    path = _file(tmp_path, "serving.yaml", "host: 0.0.0.0\nprot: 3001\n")
    with pytest.raises(ConfigError) as exc:
        ServingConfig.load(path)
    assert _message(exc).startswith(f"{path}: unknown key(s) prot (known: alerts, ")
    assert "port" in _message(exc)


def test_a_wrong_type_names_the_file_the_key_and_the_value(tmp_path: Path) -> None:
    path = _file(tmp_path, "training.yaml", "trials: many\n")
    with pytest.raises(ConfigError) as exc:
        TrainingConfig.load(path)
    assert _message(exc) == (
        f"{path}: trials: input should be a valid integer, unable to parse string as an integer, got 'many'"
    )


def test_a_missing_required_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "serving.yaml",
        "alerts:\n  rules:\n    - {kind: at-risk, min_churn_probability: 0.5}\n    - {tier_drop: 2}\n",
    )
    with pytest.raises(ConfigError) as exc:
        ServingConfig.load(path)
    assert _message(exc) == f"{path}: alerts.rules.1.kind: missing (required)"


def test_a_bad_nested_key_names_the_file_and_the_dotted_key(tmp_path: Path) -> None:
    path = _file(tmp_path, "serving.yaml", "drift:\n  psi_alrt: 0.3\n")
    with pytest.raises(ConfigError) as exc:
        ServingConfig.load(path)
    assert _message(exc) == (
        f"{path}: unknown key(s) drift.psi_alrt (known: enabled, min_features, psi_alert, top, watch)"
    )
    deeper = _file(tmp_path, "dataset.yaml", "tables:\n  transactions:\n    colums: {amount: dollars}\n")
    with pytest.raises(ConfigError) as exc:
        DatasetConfig.from_yaml(deeper)
    assert _message(exc) == (
        f"{deeper}: unknown key(s) tables.transactions.colums (known: columns, file, timestamp_format)"
    )


def test_a_bad_environment_override_names_the_variable_the_file_and_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path, "serving.yaml", "port: 3000\n")
    monkeypatch.setenv("DIAMOND_SERVING_PORT", "thirty")
    with pytest.raises(ConfigError) as exc:
        ServingConfig.load(path)
    assert _message(exc) == (
        f"{path}: port: input should be a valid integer, unable to parse string as an integer, got 'thirty' "
        "(from $DIAMOND_SERVING_PORT)"
    )
    monkeypatch.delenv("DIAMOND_SERVING_PORT")
    monkeypatch.setenv("DIAMOND_SERVING_DRIFT__PSI_ALERT", "-1")
    with pytest.raises(ConfigError) as exc:
        ServingConfig.load(path)
    assert _message(exc) == (
        f"{path}: drift.psi_alert: input should be greater than 0, got '-1' "
        "(from $DIAMOND_SERVING_DRIFT__PSI_ALERT)"
    )
    monkeypatch.delenv("DIAMOND_SERVING_DRIFT__PSI_ALERT")
    monkeypatch.setenv("DIAMOND_SERVING_DRIFT", "{psi_alert: 0.3}")  # a whole section is JSON
    with pytest.raises(ConfigError) as exc:
        ServingConfig.load(path)
    assert _message(exc).startswith(f"{path}: drift: not valid JSON: Expecting property name")
    assert _message(exc).endswith("(from $DIAMOND_SERVING_DRIFT)")


def test_the_cli_exits_2_with_the_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _file(tmp_path, "bad.yaml", "trials: 2\ngate:\n  min_auc_gain: 0.01\n")
    done = run_diamond("train", "--data", str(tmp_path / "nowhere"), "--config", str(bad), check=False)
    assert done.returncode == 2, done.stderr
    text = re.sub(r"\s+", " ", done.stderr)
    assert f"error: {bad}: unknown key(s) gate.min_auc_gain (known: max_brier_increase, " in text
    assert "Traceback" not in done.stderr
    monkeypatch.setenv("DIAMOND_TRAINING_TRIALS", "0")
    good = _file(tmp_path, "good.yaml", "trials: 2\n")
    done = run_diamond("train", "--data", str(tmp_path / "nowhere"), "--config", str(good), check=False)
    assert done.returncode == 2, done.stderr
    assert (
        f"{good}: trials: input should be greater than or equal to 1, got '0' (from $DIAMOND_TRAINING_TRIALS)"
        in re.sub(r"\s+", " ", done.stderr)
    )


# --- every file and rule ------------------------------------------------------------------------------------


def test_the_shipped_files_load_and_match_the_built_in_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The YAML files in the repository are valid, and say what the code would do without them."""
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    training = TrainingConfig.load(root / "training.yaml")
    assert training.model_dump(exclude={"search"}) == TrainingConfig().model_dump(exclude={"search"})
    assert training.search == {k: (float(lo), float(hi)) for k, (lo, hi) in SPACE.items()}  # the defaults
    assert MlflowConfig.load(root / "mlflow.yaml").model_dump() == MlflowConfig().model_dump()
    serving = ServingConfig.load(root / "serving.yaml")
    assert serving.alerts is not None and [r.kind for r in serving.alerts.rules] == [
        "high-value-at-risk",
        "tier-drop",
        "top-value-at-risk",
    ]
    assert serving.model_copy(update={"alerts": None}).model_dump() == ServingConfig().model_dump()
    assert EngineConfig.load(root / "engine.yaml").spark.master == "local[2]"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("training.yaml", "tiers: {diamond: 0.6, gold: 0.5, rest: null}\n", "tiers: need two or more names"),
        (
            "training.yaml",
            "tiers: {diamond: -0.1, rest: null}\n",
            "tiers.diamond: input should be greater than",
        ),
        (
            "training.yaml",
            "search: {max_dept: [1, 3]}\n",
            "search.max_dept: not one of the searched parameters n_estimators, learning_rate, max_depth",
        ),
        (
            "training.yaml",
            "search: {max_depth: [3, 1]}\n",
            "search.max_depth: must be [low, high] with low <= high",
        ),
        ("training.yaml", "retrain: {every_days: 0}\n", "retrain.every_days: input should be greater than 0"),
        (
            "training.yaml",
            "retrain: {every_days: true}\n",
            "retrain.every_days: must be a positive number of days",
        ),
        (
            "training.yaml",
            "retrain: {on_drift: maybe}\n",
            "retrain.on_drift: input should be a valid boolean",
        ),
        ("training.yaml", "xgboost: {gamma: 1}\n", "unknown key(s) xgboost.gamma (known: colsample_bytree,"),
        ("training.yaml", "horizon_days: 0\n", "horizon_days: input should be greater than or equal to 1"),
        (
            "serving.yaml",
            "max_customers: 5000\n",
            "max_customers: must be at most 1000 (the documented limit)",
        ),
        ("serving.yaml", "max_body_mb: 0\n", "max_body_mb: input should be greater than 0"),
        ("serving.yaml", "tiers: {order: [gold, gold]}\n", "tiers.order: repeats a tier name"),
        (
            "serving.yaml",
            "tiers: {demote_after: 0}\n",
            "tiers.demote_after: input should be greater than or equal",
        ),
        ("serving.yaml", "alerts: {cooldown_hours: 3}\n", "alerts.rules: at least one rule is needed"),
        ("serving.yaml", "alerts: {rules: [{kind: x}]}\n", "alerts.rules.0: no condition given"),
        (
            "serving.yaml",
            "alerts: {rules: [{kind: x, tier_drop: 1}, {kind: x, tier_drop: 2}]}\n",
            "alerts.rules: kinds must be distinct",
        ),
        (
            "serving.yaml",
            "alerts: {tiers: [a, b], rules: [{kind: x, min_tier: platinum}]}\n",
            "alerts.rules.0.min_tier: 'platinum' is not one of a, b",
        ),
        (
            "serving.yaml",
            "alerts: {rules: [{kind: x, min_churn_probability: 1.5}]}\n",
            "alerts.rules.0.min_churn_probability: input should be less than or equal to 1",
        ),
        (
            "serving.yaml",
            "alerts: {rules: [{kind: x, tier_drop: 1}], playbooks: {gold: {text: call}}}\n",
            "alerts.playbooks.gold.due_within_hours: missing (required)",
        ),
        (
            "serving.yaml",
            "alerts: {rules: [{kind: x, tier_drop: 1}], uplift: {min_outcomes: 5}}\n",
            "alerts.uplift.min_outcomes: input should be greater than or equal to 20",
        ),
        (
            "serving.yaml",
            "drift: {watch: [labels]}\n",
            "'drift.watch.0' is 'labels'; expected one of features, scores",
        ),
        (
            "serving.yaml",
            "webhooks: {endpoints: [{url: 'https://x'}]}\n",
            "webhooks.endpoints.0.name: missing (required)",
        ),
        (
            "serving.yaml",
            "webhooks: {endpoints: [{name: crm, secret_env: S}]}\n",
            "webhooks.endpoints.0: endpoint 'crm' needs a url (or url_env)",
        ),
        (
            "serving.yaml",
            "webhooks: {endpoints: [{name: crm, url: 'https://x'}]}\n",
            "webhooks.endpoints.0.secret_env: missing (required)",
        ),
        (
            "serving.yaml",
            "webhooks: {retries: 3}\n",
            "unknown key(s) webhooks.retries (known: base_delay_s, endpoints,",
        ),
        ("engine.yaml", "engine: flink\n", "'engine' is 'flink'; expected one of duckdb, spark"),
        ("engine.yaml", "spark: {masterr: local}\n", "unknown key(s) spark.masterr (known: conf, master)"),
        ("mlflow.yaml", "experiment: [a, b]\n", "experiment: input should be a valid string"),
        (
            "mlflow.yaml",
            "tracking: sqlite:///x.db\n",
            "unknown key(s) tracking (known: artifact_root, experiment,",
        ),
        ("dataset.yaml", "on_invalid: skip\n", "'on_invalid' is 'skip'; expected one of error, drop"),
        ("dataset.yaml", "as_of: soon\n", "as_of: 'soon' is not an ISO date or timestamp"),
        (
            "dataset.yaml",
            "tables: {orders: {}}\n",
            "unknown key(s) tables.orders (known: cancellations, customers,",
        ),
        (
            "dataset.yaml",
            "tables: {transactions: {columns: {amount: 5}}}\n",
            "tables.transactions.columns.amount: input should be a valid string, got 5",
        ),
        # numbers are finite and never true/false (pydantic's lax mode would read true as 1)
        (
            "serving.yaml",
            "alerts: {control_share: .nan}\n",
            "alerts.control_share: input should be a finite number",
        ),
        (
            "serving.yaml",
            "alerts: {control_share: true}\n",
            "alerts.control_share: input should be a number, not true or false",
        ),
        (
            "serving.yaml",
            "alerts: {playbooks: {gold: {text: call, due_within_hours: 24, cost: .inf}}}\n",
            "alerts.playbooks.gold.cost: input should be a finite number, got inf",
        ),
        (
            "serving.yaml",
            "alerts: {playbooks: {gold: {text: call, due_within_hours: 24, cost: true}}}\n",
            "alerts.playbooks.gold.cost: input should be a number, not true or false",
        ),
        ("serving.yaml", "port: true\n", "port: input should be a number, not true or false"),
        (
            "training.yaml",
            "contract: {periods: 0}\n",
            "contract.periods: input should be greater than or equal to 1",
        ),
        (
            "training.yaml",
            "levels: {contract_windows: 0}\n",
            "levels.contract_windows: input should be greater than or equal to 1",
        ),
        (
            "training.yaml",
            "levels: {window: newest}\n",
            "'levels.window' is 'newest'; expected one of seasonal,",
        ),
        (
            "training.yaml",
            "gate: {min_churn_auc_gain: .nan}\n",
            "gate.min_churn_auc_gain: input should be a finite",
        ),
    ],
)
def test_each_rule_names_the_file_and_the_key(tmp_path: Path, name: str, text: str, expected: str) -> None:
    loader = {
        "training.yaml": TrainingConfig.load,
        "serving.yaml": ServingConfig.load,
        "engine.yaml": EngineConfig.load,
        "mlflow.yaml": MlflowConfig.load,
        "dataset.yaml": DatasetConfig.from_yaml,
    }[name]
    path = _file(tmp_path, name, text)
    with pytest.raises(ConfigError) as exc:
        loader(path)
    assert _message(exc).startswith(f"{path}: {expected}"), _message(exc)


def test_files_that_are_not_a_mapping_or_not_yaml_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"serving\.yaml: expected a mapping of settings, got list"):
        ServingConfig.load(_file(tmp_path, "serving.yaml", "- port: 3000\n"))
    with pytest.raises(ConfigError, match=r"training\.yaml: not valid YAML"):
        TrainingConfig.load(_file(tmp_path, "training.yaml", "tiers: [\n"))
    with pytest.raises(ConfigError, match=r"absent\.yaml: no such engine config"):
        EngineConfig.load(tmp_path / "absent.yaml")
    empty = TrainingConfig.load(_file(tmp_path, "empty.yaml", "# nothing set\n"))
    assert empty.model_dump() == TrainingConfig().model_dump() and empty.file == str(tmp_path / "empty.yaml")


def test_sections_left_empty_mean_their_defaults(tmp_path: Path) -> None:
    config = ServingConfig.load(_file(tmp_path, "serving.yaml", "tiers:\nwebhooks:\ndrift:\nalerts: {}\n"))
    assert config.alerts is None  # no alerts section: alerts are off
    assert config.tiers.demote_after == 3 and config.drift.watch == ("features", "scores")
    assert config.webhooks.max_attempts == 8 and config.endpoints() == {}
    training = TrainingConfig.load(_file(tmp_path, "training.yaml", "exclude_features: null\ngate:\n"))
    assert training.exclude_features == () and training.gate.min_churn_auc_gain == 0.0
    dataset = DatasetConfig.from_yaml(
        _file(tmp_path, "dataset.yaml", "name: 2024\ntables: {customers: null}\n")
    )
    assert dataset.name == "2024" and dataset.table("customers").columns == {}


def test_config_is_frozen_and_copied_with_changes() -> None:
    config = TrainingConfig()
    with pytest.raises(ValidationError, match="frozen"):
        config.trials = 3  # type: ignore[misc]
    assert config.model_copy(update={"horizon_days": 91}).horizon_days == 91 and config.horizon_days == 273


# --- the environment ----------------------------------------------------------------------------------------


def test_the_environment_variables_of_before_keep_their_meaning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    serving = _file(tmp_path, "other-serving.yaml", "port: 3100\nstore_url: sqlite:///from-file.db\n")
    monkeypatch.setenv("DIAMOND_SERVING_CONFIG", str(serving))
    assert ServingConfig.load().port == 3100
    assert ServingConfig.load().store_url == f"sqlite:///{tmp_path / 'from-file.db'}"  # relative: the cwd
    assert ServingConfig.load().scores_dir == str(tmp_path / ".diamond" / "scores")
    monkeypatch.setenv("DIAMOND_STORE_URL", "sqlite:///env.db")
    assert ServingConfig.load().store_url == f"sqlite:///{tmp_path / 'env.db'}"  # the variable wins
    monkeypatch.setenv("DIAMOND_STORE_URL", "")  # empty: unset, as before
    assert ServingConfig.load().store_url == f"sqlite:///{tmp_path / 'from-file.db'}"
    assert (
        ServingConfig.load(_file(tmp_path, "given.yaml", "port: 3200\n")).port == 3200
    )  # a path beats the variable

    mlflow = _file(tmp_path, "ml.yaml", "tracking_uri: sqlite:///ml.db\nartifact_root: arts\nexperiment: e\n")
    monkeypatch.setenv("DIAMOND_MLFLOW_CONFIG", str(mlflow))
    ml = MlflowConfig.load()
    assert (ml.tracking_uri, ml.artifact_root, ml.experiment) == (
        f"sqlite:///{tmp_path / 'ml.db'}",
        (tmp_path / "arts").as_uri(),
        "e",
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert MlflowConfig.load().tracking_uri == "http://mlflow.internal:5000"

    engine = _file(tmp_path, "engine.yaml", "engine: spark\nspark: {master: 'local[4]'}\n")
    monkeypatch.setenv("DIAMOND_ENGINE_CONFIG", str(engine))
    assert EngineConfig.load().engine == "spark" and EngineConfig.load().spark.master == "local[4]"
    assert EngineConfig.load(engine="duckdb").engine == "duckdb"  # --engine wins
    with pytest.raises(ConfigError, match="engine 'flink': expected one of duckdb, spark"):
        EngineConfig.load(engine="flink")


def test_any_key_is_overridden_by_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, "serving.yaml", "port: 3000\ndrift: {psi_alert: 0.25, top: 5}\n")
    monkeypatch.setenv("DIAMOND_SERVING_PORT", "3001")
    monkeypatch.setenv("DIAMOND_SERVING_DRIFT__PSI_ALERT", "0.4")
    config = ServingConfig.load(path)
    assert (
        config.port == 3001 and config.drift.psi_alert == 0.4 and config.drift.top == 5
    )  # merged, not replaced
    monkeypatch.setenv("DIAMOND_TRAINING_RETRAIN__EVERY_DAYS", "null")
    monkeypatch.setenv("DIAMOND_TRAINING_SEARCH", '{"max_depth": [1, 4]}')
    training = TrainingConfig.load(_file(tmp_path, "training.yaml", "trials: 5\n"))
    assert training.retrain.every_days is None and training.retrain.on_drift
    assert training.search == {"max_depth": (1.0, 4.0)} and training.trials == 5
    monkeypatch.setenv("DIAMOND_ENGINE_SPARK__MASTER", "spark://head:7077")
    assert EngineConfig.load().spark.master == "spark://head:7077"


# --- what only the served model or the environment can tell -------------------------------------------------


def test_alert_rules_are_checked_against_the_served_models_tiers(tmp_path: Path) -> None:
    path = _file(tmp_path, "serving.yaml", "alerts:\n  rules:\n    - {kind: vip, min_tier: platinum}\n")
    config = ServingConfig.load(path)  # no tier names yet: the model brings them
    assert config.alert_rules(["platinum", "rest"]).tiers == ("platinum", "rest")
    with pytest.raises(ConfigError) as exc:
        config.alert_rules(["diamond", "gold"])
    assert _message(exc) == f"{path}: alerts.rules.0.min_tier: 'platinum' is not one of diamond, gold"
    assert ServingConfig.load(_file(tmp_path, "off.yaml", "port: 3000\n")).alert_rules(["gold"]) is None


def test_webhook_secrets_come_from_the_variables_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(
        tmp_path,
        "serving.yaml",
        "webhooks:\n  endpoints:\n"
        "    - {name: crm, url: 'https://crm.example.com/hook', secret_env: TEST_HOOK_SECRET, timeout_s: 3}\n"
        "    - {name: slack, url_env: TEST_SLACK_URL, format: slack, secret_env: TEST_SLACK_SECRET}\n",
    )
    config = ServingConfig.load(path)  # the variables are read when delivering, not at load
    with pytest.raises(ConfigError) as exc:
        config.endpoints()
    assert _message(exc) == (
        f"{path}: webhooks.endpoints.0.secret_env: set the secret of endpoint 'crm' in $TEST_HOOK_SECRET"
    )
    monkeypatch.setenv("TEST_HOOK_SECRET", "secret-one")
    monkeypatch.setenv("TEST_SLACK_SECRET", "secret-two")
    with pytest.raises(ConfigError) as exc:
        config.endpoints()
    assert (
        _message(exc)
        == f"{path}: webhooks.endpoints.1.url_env: set the URL of endpoint 'slack' in $TEST_SLACK_URL"
    )
    monkeypatch.setenv("TEST_SLACK_URL", "https://hooks.slack.example/T0")
    crm, slack = config.endpoints().values()
    assert (crm.name, crm.url, crm.secret, crm.format, crm.timeout_s) == (
        "crm",
        "https://crm.example.com/hook",
        "secret-one",
        "json",
        3.0,
    )
    assert (slack.url, slack.secret, slack.format, slack.timeout_s) == (
        "https://hooks.slack.example/T0",
        "secret-two",
        "slack",
        10.0,
    )
