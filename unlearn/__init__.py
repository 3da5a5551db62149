"""Weight-level unlearning (GA, GradDiff, NPO, SimNPO, RMU) and supervised fine-tuning.

Builds the weight-unlearned baselines users compare against and the assistant models for contrastive
decoding. Each method is a small class in ``obliviate.unlearn.methods`` that defines only its loss; one trainer
loop (``obliviate.unlearn.trainer``) runs them all. Entry points: ``obliviate.unlearn.pipeline`` and ``obliviate
finetune`` / ``obliviate unlearn`` (``obliviate.unlearn.cli``). torch/transformers are imported lazily.
"""
