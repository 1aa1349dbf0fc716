"""Study orchestration: CLI, Ray Tune + Optuna, MLflow tracking, reports, best-config export."""
