"""Label sets and names: emotion/gender spellings, mapping to the configured labels, keys.

The one home for alias tables: every importer turns a corpus's spelling of an emotion or a gender
into the canonical name here, so "angry", "ang" and "mad" mean the same label in every corpus.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from lakd import DEFAULT_LABELS

_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]+")

# Common spellings of emotion names in labels files and folder names -> canonical name.
EMOTION_ALIASES = {
    "angry": "anger",
    "ang": "anger",
    "mad": "anger",
    "happy": "happiness",
    "hap": "happiness",
    "joy": "happiness",
    "joyful": "happiness",
    "neu": "neutral",
    "sad": "sadness",
    "fearful": "fear",
    "fea": "fear",
    "afraid": "fear",
    "disgusted": "disgust",
    "dis": "disgust",
    "surprised": "surprise",
    "sur": "surprise",
    "bored": "boredom",
    "fru": "frustration",
    "frustrated": "frustration",
    "exc": "excitement",
    "excited": "excitement",
}

# Spellings of a speaker's gender in labels files and demographics tables -> "f" or "m" (else "u").
GENDER_ALIASES = {"f": "f", "female": "f", "woman": "f", "w": "f", "m": "m", "male": "m", "man": "m"}


def normalize_labels(labels: Iterable[str] | None) -> list[str]:
    labs = list(labels) if labels is not None else list(DEFAULT_LABELS)
    if isinstance(labels, str):
        labs = [x.strip() for x in labels.split(",") if x.strip()]
    if not labs or len(set(labs)) != len(labs):
        raise ValueError(f"labels must be a non-empty list of distinct names, got {labs}")
    return labs


def map_label(emotion: str, raw: str | None, labels: Sequence[str], label_map: Mapping[str, str] | None) -> str | None:
    """The configured label for an utterance, or None if it falls outside the label set.

    `label_map` may rename either the corpus's raw code (e.g. "exc", "02") or the canonical name
    (e.g. "calm": "neutral"); a value of "" or None drops the class explicitly.
    """
    target = emotion
    if label_map:
        if raw is not None and raw in label_map:
            target = label_map[raw]
        elif emotion in label_map:
            target = label_map[emotion]
    if not target:
        return None
    return target if target in labels else None


def canonical_emotion(name: str, labels: Sequence[str] = ()) -> str:
    """Lower-cased canonical emotion name; a name that is already a configured label is kept as is."""
    name = name.strip()
    if name in labels:
        return name
    low = name.lower()
    return EMOTION_ALIASES.get(low, low)


def canonical_gender(name: str) -> str:
    """ "f", "m", or "u" when the spelling is unknown or empty."""
    return GENDER_ALIASES.get(name.strip().lower(), "u")


def sanitize_key(text: str) -> str:
    key = _KEY_BAD.sub("_", text).strip("_")
    if not key:
        raise ValueError(f"cannot make a sample key from {text!r}")
    return key


def corpus_name(text: str) -> str:
    """A corpus name usable as shard prefix: letters, digits and '_' (no '-', which separates the language)."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower()
    if not name:
        raise ValueError(f"invalid corpus name {text!r}")
    return name
