"""Metric functions, one module per family (open-unlearning's metric handlers).

All are pure: they take per-item numbers or texts and return open-unlearning's
``{"agg_value": ..., "value_by_index": {str(idx): {...}}}``. The runners (``tofu_run``, ``muse_run``,
``runs``) call them by name.
"""
