"""Names of the run-dir files that one module writes and another reads (kept free of heavy imports, so that the
report, which reads them, starts without torch)."""

TEST_EPISODES_FILE = "test_episodes.csv"  # a training run's test episodes: episode, acc, loss, in the order drawn
CURVE_EPISODES_FILE = "curve_episodes.csv"  # an eval_only run's: n_way, k_shot, episode, acc, loss
