"""The audio-classification pipeline with the utterance's language: `pipe(audio, language="fi")`.

transformers' own AudioClassificationPipeline passes only the audio to the model, so a language-aware model
would always see the "unknown language" embedding; this subclass (named in config.json's `custom_pipelines`,
loaded with `trust_remote_code=True`) adds the optional `language` argument. Without it, or with
`language="unknown"`, the model uses its shared "any" embedding; a code the model was not trained on is an error.
"""

import torch
from transformers import AudioClassificationPipeline


class LakdAudioClassificationPipeline(AudioClassificationPipeline):
    def _sanitize_parameters(self, top_k=None, function_to_apply=None, language=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(
            top_k=top_k, function_to_apply=function_to_apply, **kwargs
        )
        if language is not None:
            self.model.language_id(language)  # fail before any audio is read
            preprocess["language"] = language
        return preprocess, forward, postprocess

    def preprocess(self, inputs, language=None):
        processed = super().preprocess(inputs)
        processed["language_ids"] = torch.tensor([self.model.language_id(language)], dtype=torch.long)
        return processed
