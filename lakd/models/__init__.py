"""wav2vec2-family backbones, pooling, and the SER model used for teachers and the student."""

from lakd.models.backbone import TINY_BACKBONE, BackboneError, build_backbone, frame_mask
from lakd.models.pooling import AttentionPool, HierarchicalAttentionPool, masked_mean
from lakd.models.ser import CheckpointError, SERModel, SEROutput

__all__ = [
    "TINY_BACKBONE",
    "BackboneError",
    "build_backbone",
    "frame_mask",
    "AttentionPool",
    "HierarchicalAttentionPool",
    "masked_mean",
    "CheckpointError",
    "SERModel",
    "SEROutput",
]
