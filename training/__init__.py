"""Model training: XGBoost churn and value models, tuned with Optuna, tracked in MLflow (issue 4)."""
