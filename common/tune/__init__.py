"""`python -m common tune`: one Optuna study per model on the same folds with the same trial budget, its
trials run as Ray jobs; the best configuration of each then goes through `cv`, where test is read once."""
