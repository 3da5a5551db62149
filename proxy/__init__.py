"""Obliviate proxy: an OpenAI-compatible endpoint that makes a served model forget."""

__version__ = "0.1.0"
