"""A tiny wav2vec2-shaped backbone that still has wav2vec2-base's receptive-field layout (strides 10·4·4·2)."""

TINY_BACKBONE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [16, 16, 16, 16],
    "conv_stride": [10, 4, 4, 2],
    "conv_kernel": [10, 8, 4, 4],
}
LABELS = ["anger", "happiness", "neutral", "sadness"]
