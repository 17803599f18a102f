"""lakd: language-aware multi-teacher knowledge distillation for multilingual speech emotion recognition.

Layers (each imports only the ones above it):
    lakd.data      shards, corpus importers, synthetic speech, streaming loader
    lakd.models    wav2vec2-family teachers and the language-aware student
    lakd.distill   distillation losses, teacher weighting, teacher-knowledge cache
    lakd.train     training engine, DeepSpeed, distributed init, checkpoints
    lakd.eval      metrics (WA/UA, confusion, bootstrap CIs) and reports
    lakd.recipes   one readable recipe per job (finetune, distill, evaluate, paper table)
    lakd.launch    submitit job graph (slurm / local / debug executors)
"""

__version__ = "0.1.0"

DEFAULT_LABELS = ("anger", "happiness", "neutral", "sadness")
SAMPLE_RATE = 16_000


def load(path, device="cpu"):
    """Load a trained lakd checkpoint directory for inference (see lakd.inference.Predictor)."""
    from lakd.inference import Predictor

    return Predictor.from_checkpoint(path, device=device)
