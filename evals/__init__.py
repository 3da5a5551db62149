"""Evaluation: TOFU / MUSE metrics in open-unlearning's definitions and log format.

``obliviate.evals.metrics`` holds the metric functions (pure, model-free: they take per-item losses,
token log-probabilities or generated texts); ``obliviate.evals.logs`` reads and writes open-unlearning's
``*_EVAL.json`` / ``*_SUMMARY.json``; ``obliviate.evals.tofu`` and ``obliviate.evals.muse`` compose the metrics into
the benchmark's named results.
"""
