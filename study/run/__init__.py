"""Running a study: Ray session, shared assets, Tune + Optuna, the trainable, confirm, outcome, paths."""
