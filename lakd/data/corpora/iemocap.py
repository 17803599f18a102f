"""IEMOCAP (Busso et al., 2008): English dyadic sessions, labels from the EmoEvaluation files.

Layout (the official release, `root` is IEMOCAP_full_release or its parent):

    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt
        [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
    Session{1..5}/dialog/transcriptions/<dialog>.txt    Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
    Session{1..5}/sentences/wav/<dialog>/<utterance>.wav

4-class protocol: ang, hap+exc -> happiness, neu, sad; fru, sur, fea, dis, oth, xxx are dropped
(and counted). The speaker is the session plus the letter that starts the last id field
(`Ses01F_impro01_M012` -> `iemocap_Ses01_M`). Folds are sessions: fold k tests on Session k with
Session k-1 as dev; the default (fold 5) is train Sessions 1-3, dev Session 4, test Session 5.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from lakd.data.corpora.importer import CorpusSpec
from lakd.data.corpora.utterances import CorpusLayoutError, Scan, ScanContext, Utterance, skip

LAYOUT = "Session{1..5}/dialog/EmoEvaluation/*.txt and Session{1..5}/sentences/wav/<dialog>/<utt>.wav"
CODES = {
    "ang": "anger",
    "hap": "happiness",
    "exc": "happiness",
    "neu": "neutral",
    "sad": "sadness",
    "fru": "frustration",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
    "oth": "other",
    "xxx": "no_agreement",
}

_EVAL_LINE = re.compile(
    r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(Ses\w+)\s+(\w+)\s+"
    r"\[\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\]"
)
_TRANS_LINE = re.compile(r"^(Ses\w+)\s+\[[^\]]*\]:\s*(.*)$")
_UTT_ID = re.compile(r"^Ses(\d{2})[FM]_.+_([FM])[A-Za-z]*\d+$")


def find_sessions(root: Path, corpus: str) -> list[Path]:
    base = root / "IEMOCAP_full_release" if (root / "IEMOCAP_full_release").is_dir() else root
    sessions = sorted(
        (p for p in base.glob("Session*") if p.is_dir() and re.fullmatch(r"Session\d+", p.name)),
        key=lambda p: int(p.name[7:]),
    )
    if not sessions:
        raise CorpusLayoutError(f"{corpus}: no Session1..Session5 folders under {root} (expected {LAYOUT})")
    return sessions


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def parse_transcriptions(path: Path) -> dict[str, str]:
    out = {}
    if path.exists():
        for line in _read_text(path).splitlines():
            m = _TRANS_LINE.match(line.strip())
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


def scan(ctx: ScanContext, merge_excitement: bool = True) -> Scan:
    """Every labelled utterance whose wav exists; `merge_excitement=False` keeps "exc" as excitement."""
    result = Scan()
    for session in find_sessions(ctx.root, ctx.corpus):
        eval_dir = session / "dialog" / "EmoEvaluation"
        if not eval_dir.is_dir():
            skip(result.skipped, eval_dir, "missing EmoEvaluation folder", ctx.strict)
            continue
        for label_file in sorted(p for p in eval_dir.glob("*.txt") if not p.name.startswith(".")):
            dialog = label_file.stem
            texts = parse_transcriptions(session / "dialog" / "transcriptions" / f"{dialog}.txt")
            for line in _read_text(label_file).splitlines():
                m = _EVAL_LINE.match(line.strip())
                if not m:
                    continue
                start, end, utt, code, val, act, dom = m.groups()
                idm = _UTT_ID.match(utt)
                if not idm:
                    skip(result.skipped, label_file, f"cannot read utterance id {utt!r}", ctx.strict)
                    continue
                session_no, letter = int(idm.group(1)), idm.group(2)
                wav = session / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav"
                if not wav.is_file():
                    skip(result.skipped, wav, f"audio file missing (labelled in {label_file.name})", ctx.strict)
                    continue
                emotion = CODES.get(code, code)
                if code == "exc" and not merge_excitement:
                    emotion = "excitement"
                result.utterances.append(
                    Utterance(
                        path=wav,
                        key=f"{ctx.corpus}_{utt}",
                        emotion=emotion,
                        speaker=f"{ctx.corpus}_Ses{session_no:02d}_{letter}",
                        language=ctx.language,
                        gender=letter.lower(),
                        text=texts.get(utt),
                        group=f"Session{session_no}",
                        extra={
                            "emotion_raw": code,
                            "session": session_no,
                            "dialog": utt.rsplit("_", 1)[0],
                            "improvised": "_impro" in utt,
                            "start": float(start),
                            "end": float(end),
                            "valence": float(val),
                            "arousal": float(act),
                            "dominance": float(dom),
                        },
                    )
                )
    return result


def session_folds(utterances: Sequence[Utterance], seed: int) -> list[list[str]]:
    """One fold per session, in session order (fixed: the seed is not used)."""
    return [[s] for s in sorted({u.group for u in utterances}, key=lambda g: int(g[7:]))]


SPEC = CorpusSpec(
    name="iemocap",
    language="en",
    scan=scan,
    default_folds=session_folds,
    description=LAYOUT,
)
