"""Weight-level unlearning (GA, GradDiff, NPO, SimNPO, RMU) and supervised fine-tuning.

Builds the weight-unlearned baselines users compare against and the assistant models for contrastive
decoding. Each method is a small class in ``unlearn.methods`` that defines only its loss; one trainer
loop (``unlearn.trainer``) runs them all. Entry points: ``unlearn.pipeline`` and ``obliviate
finetune`` / ``obliviate unlearn`` (``unlearn.cli``). torch/transformers are imported lazily.
"""
