"""Obliviate: an inference-time unlearning proxy for LLMs.

The import root of the distribution. Its subpackages live in the repository's top-level folders
(``proxy/`` is ``obliviate.proxy``, ``guards/`` is ``obliviate.guards``, and so on for ``index/``,
``unlearn/`` and ``evals/``); ``pyproject.toml`` maps them with setuptools' ``package-dir``, so the
installed wheel has one top-level name and cannot overwrite another distribution's files.

Layers point one way: ``evals``/``unlearn`` -> ``proxy`` -> ``guards`` -> ``index``, and ``evals``
uses ``unlearn`` (never the reverse); ``tests/test_layers.py`` checks it.
"""

__version__ = "0.1.0"
