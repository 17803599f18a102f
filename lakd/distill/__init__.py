"""Distillation losses, per-sample teacher weighting, and the teacher-knowledge cache."""

from lakd.distill.cache import (
    CacheCorruptError,
    CacheError,
    CacheMismatchError,
    CacheMissError,
    TeacherCache,
    checkpoint_hash,
)
from lakd.distill.cache_write import write_teacher_cache
from lakd.distill.losses import EmbeddingProjections, distillation_loss, route_matrix, teacher_weights

__all__ = [
    "CacheCorruptError",
    "CacheError",
    "CacheMismatchError",
    "CacheMissError",
    "TeacherCache",
    "checkpoint_hash",
    "write_teacher_cache",
    "EmbeddingProjections",
    "distillation_loss",
    "route_matrix",
    "teacher_weights",
]
