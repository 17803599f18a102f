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

# The smallest end-to-end run of the tiny config: 3 speakers × 8 utterances per language, one epoch each.
TINY_RUN = [
    "synth.speakers_per_language=3",
    "synth.utterances_per_speaker=8",
    "synth.splits={train: 1, dev: 1, test: 1}",
    "teacher_optim.epochs=1",
    "student_optim.epochs=1",
    "wandb.mode=offline",
    "threads=1",
]
