"""Names of the run-dir files that one module writes and another reads (kept free of heavy imports, so that the
report, which reads them, starts without torch)."""

TEST_EPISODES_FILE = "test_episodes.csv"  # a training run's test episodes: episode, acc, loss, in the order drawn
CURVE_EPISODES_FILE = "curve_episodes.csv"  # an eval_only run's: n_way, k_shot, episode, acc, loss
# how long this machine took to train (train/wall_s, train/timed_episodes: those this process trained,
# train/episodes_per_s); kept apart from results.json, whose numbers a rerun of the same command reproduces exactly
TIMING_FILE = "timing.json"
METRICS_FILE = "metrics.jsonl"  # one JSON line per logged step (fewshot_exp/tracking.py)
