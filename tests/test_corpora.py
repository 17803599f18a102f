"""Corpus importers on tiny trees laid out exactly like the real corpora (audio = short tones)."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lakd.data.corpora import CORPORA, CorpusImportError, CorpusLayoutError, CorpusSpec, import_corpus, prepare
from lakd.data.corpora.folds import speaker_blocks
from lakd.data.corpora.labels import canonical_emotion
from lakd.data.corpora.utterances import Scan, Utterance
from lakd.data.index import read_index
from lakd.data.shards import iter_tar_samples
from lakd.data.splits import SplitLeakError, check_shard_dirs

LABELS = ["anger", "happiness", "neutral", "sadness"]


def tone(
    path: Path, sr: int = 16000, seconds: float = 0.05, channels: int = 1, subtype: str = "PCM_16", freq: float = 220.0
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.2 * np.sin(2 * np.pi * freq * t)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    fmt = "AIFF" if path.suffix.lower() in (".aiff", ".aif") else "WAV"
    sf.write(str(path), data, sr, subtype=subtype, format=fmt)
    return path


def samples(out: Path, split: str) -> list[dict]:
    """Every sample's json, plus the decoded FLAC's rate/channels as _sr/_channels."""
    out_rows = []
    for tar in sorted((out / split).glob("*.tar")):
        for key, members in iter_tar_samples(tar):
            meta = json.loads(members["json"])
            info = sf.info(io.BytesIO(members["flac"]))
            out_rows.append(
                {**meta, "_key": key, "_sr": info.samplerate, "_channels": info.channels, "_subtype": info.subtype}
            )
    return out_rows


def all_samples(out: Path) -> list[dict]:
    return [s for split in ("train", "dev", "test") for s in samples(out, split)]


def assert_well_formed(out: Path, language: str, corpus: str) -> None:
    speakers = check_shard_dirs(out)  # raises if any speaker is in two splits
    assert set(speakers) == {"train", "dev", "test"}
    for s in all_samples(out):
        assert s["language"] == language and s["corpus"] == corpus and s["emotion"] in LABELS
        assert s["_key"].startswith(corpus)


# ----------------------------------------------------------------------------- IEMOCAP

EVAL_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def make_iemocap(root: Path) -> None:
    """5 sessions, one improvised dialog each; per session: ang, hap, exc, neu, sad, fru, xxx."""
    for n in range(1, 6):
        session = root / "IEMOCAP_full_release" / f"Session{n}"
        dialog = f"Ses0{n}F_impro0{n}"
        lines, trans = [EVAL_HEADER], []
        codes = [("F", "ang"), ("M", "hap"), ("F", "exc"), ("M", "neu"), ("F", "sad"), ("M", "fru"), ("F", "xxx")]
        for i, (letter, code) in enumerate(codes):
            utt = f"{dialog}_{letter}{i:03d}"
            start, end = 1.5 + 3 * i, 3.25 + 3 * i
            lines.append(f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[2.5000, 3.0000, 3.5000]\n")
            lines.append("C-E2:\tNeutral;\t()\nC-E3:\tAnger;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n")
            trans.append(f"{utt} [{start:08.4f}-{end:08.4f}]: Sentence number {i}.\n")
            tone(session / "sentences" / "wav" / dialog / f"{utt}.wav")
        if n == 2:  # labelled, but its audio is missing from the release copy
            lines.append(f"[40.0000 - 41.0000]\t{dialog}_M099\tneu\t[2.5000, 2.5000, 2.5000]\n")
        (session / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (session / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("".join(lines))
        (session / "dialog" / "EmoEvaluation" / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 mac fork")
        (session / "dialog" / "transcriptions").mkdir(parents=True)
        (session / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("".join(trans))


def test_iemocap_four_class_protocol_and_session_folds(tmp_path):
    make_iemocap(tmp_path / "src")
    s = import_corpus("iemocap", tmp_path / "src", tmp_path / "out")
    assert_well_formed(tmp_path / "out", "en", "iemocap")
    # per session: ang, hap+exc, neu, sad kept (5); fru and xxx dropped
    assert s.num_samples == 25 and s.dropped == {"frustration": 5, "no_agreement": 5}
    assert s.num_skipped == 1 and "Ses02F_impro02_M099.wav" in s.skipped[0]["path"]
    assert s.counts["test"] == {"en": {"anger": 1, "happiness": 2, "neutral": 1, "sadness": 1}}
    assert s.split_speakers == {
        "train": [f"iemocap_Ses0{n}_{g}" for n in (1, 2, 3) for g in "FM"],
        "dev": ["iemocap_Ses04_F", "iemocap_Ses04_M"],
        "test": ["iemocap_Ses05_F", "iemocap_Ses05_M"],
    }
    by_key = {x["_key"]: x for x in all_samples(tmp_path / "out")}
    exc = by_key["iemocap_Ses05F_impro05_F002"]
    assert exc["emotion"] == "happiness" and exc["emotion_raw"] == "exc" and exc["gender"] == "f"
    assert exc["text"] == "Sentence number 2." and exc["session"] == 5 and exc["valence"] == 2.5
    assert exc["arousal"] == 3.0 and exc["dominance"] == 3.5 and exc["start"] == 7.5
    assert by_key["iemocap_Ses05F_impro05_M001"]["speaker"] == "iemocap_Ses05_M"

    s1 = import_corpus("iemocap", tmp_path / "src", tmp_path / "out", fold="1")  # the CLI passes strings
    assert s1.protocol["test"] == ["Session1"] and s1.protocol["dev"] == ["Session5"]
    assert import_corpus("iemocap", tmp_path / "src", tmp_path / "out", fold="Session3").protocol["fold"] == 3
    with pytest.raises(ValueError, match="fold 'Session9' is neither"):
        import_corpus("iemocap", tmp_path / "src", tmp_path / "out", fold="Session9")
    assert s1.split_speakers["test"] == ["iemocap_Ses01_F", "iemocap_Ses01_M"]
    loso = import_corpus("iemocap", tmp_path / "src", tmp_path / "out2", scheme="loso")
    assert loso.split_speakers["test"] == ["iemocap_Ses05_M"] and loso.split_speakers["dev"] == ["iemocap_Ses05_F"]
    four = import_corpus("iemocap", tmp_path / "src", tmp_path / "out3", merge_excitement=False)
    assert four.dropped["excitement"] == 5 and four.num_samples == 20


# ----------------------------------------------------------------------------- RAVDESS


def make_ravdess(root: Path) -> None:
    for actor in range(1, 25):
        for emo in ("01", "02", "03", "04", "05", "06"):
            tone(root / f"Actor_{actor:02d}" / f"03-01-{emo}-01-01-01-{actor:02d}.wav", sr=48000)
        tone(root / f"Actor_{actor:02d}" / f"03-01-05-02-02-02-{actor:02d}.wav", sr=48000)
    tone(root / "Actor_01" / "03-02-03-01-01-01-01.wav")  # song: not speech
    tone(root / "Actor_02" / "01-01-03-01-01-01-02.wav")  # audio-visual file (video modality)


def test_ravdess_speech_only_folds_and_corrupt_file(tmp_path):
    make_ravdess(tmp_path / "src")
    (tmp_path / "src" / "Actor_03" / "03-01-04-01-02-01-03.wav").write_bytes(b"RIFF\x00\x00broken")
    s = import_corpus("ravdess", tmp_path / "src", tmp_path / "out")
    assert_well_formed(tmp_path / "out", "en", "ravdess")
    # per actor kept: neutral, happy, sad, angry x2 = 5; calm and fearful dropped
    assert s.num_samples == 24 * 5 and s.dropped == {"calm": 24, "fear": 24}
    assert s.excluded == {"song (vocal channel 02)": 1, "not audio-only (modality 01)": 1}
    assert s.num_skipped == 1 and s.skipped[0]["path"].endswith("03-01-04-01-02-01-03.wav")
    assert "unreadable audio" in s.skipped[0]["reason"]
    assert s.split_speakers["test"] == [f"ravdess_{a}" for a in (21, 22, 23, 24)]
    assert s.split_speakers["dev"] == [f"ravdess_{a}" for a in (17, 18, 19, 20)]
    one = {x["_key"]: x for x in samples(tmp_path / "out", "test")}["ravdess_03-01-05-02-02-02-21"]
    assert one["emotion"] == "anger" and one["gender"] == "m" and one["intensity"] == "strong"
    assert one["text"] == "Dogs are sitting by the door" and one["_sr"] == 48000 and one["sample_rate"] == 48000
    with pytest.raises(CorpusImportError, match="03-01-04-01-02-01-03.wav"):
        import_corpus("ravdess", tmp_path / "src", tmp_path / "strict", strict=True)
    merged = import_corpus("ravdess", tmp_path / "src", tmp_path / "out", label_map={"calm": "neutral"}, fold=2)
    assert merged.counts["test"]["en"]["neutral"] == 8 and "calm" not in merged.dropped
    assert merged.split_speakers["test"] == [f"ravdess_0{a}" for a in (5, 6, 7, 8)]


# ----------------------------------------------------------------------------- CREMA-D


def test_cremad_demographics_levels_and_empty_file(tmp_path):
    root = tmp_path / "CREMA-D"
    sentences = ["DFA", "IEO", "TIE", "MTI"]
    for a in range(1001, 1011):
        for i, emo in enumerate(("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")):
            tone(root / "AudioWAV" / f"{a}_{sentences[i % 4]}_{emo}_{['LO', 'MD', 'HI', 'XX'][i % 4]}.wav")
    (root / "AudioWAV" / "1010_MTI_SAD_XX.wav").write_bytes(b"")  # like the release's broken 1076_MTI_SAD_XX.wav
    rows = ["ActorID,Age,Sex,Race,Ethnicity"] + [
        f"{a},{20 + a % 50},{'Male' if a % 2 else 'Female'},Caucasian,Not Hispanic" for a in range(1001, 1010)
    ]
    (root / "VideoDemographics.csv").write_text("\n".join(rows) + "\n")
    s = import_corpus("cremad", root, tmp_path / "out")
    assert_well_formed(tmp_path / "out", "en", "cremad")
    assert s.num_samples == 10 * 4 and s.dropped == {"disgust": 10, "fear": 10} and s.num_skipped == 1
    assert "1010_MTI_SAD_XX.wav" in s.skipped[0]["path"] and s.skipped[0]["reason"] == "empty file (0 bytes)"
    # a clone without git-lfs has pointer files instead of audio: say so instead of writing nothing
    lfs = tmp_path / "lfs" / "AudioWAV"
    lfs.mkdir(parents=True)
    for a in (1001, 1002, 1003):
        (lfs / f"{a}_DFA_ANG_XX.wav").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    with pytest.raises(CorpusImportError, match="none of the 3 selected files could be read.*git lfs pull"):
        import_corpus("cremad", tmp_path / "lfs", tmp_path / "lfs_out")
    assert s.split_speakers["test"] == ["cremad_1009", "cremad_1010"]
    by_key = {x["_key"]: x for x in all_samples(tmp_path / "out")}
    x = by_key["cremad_1001_DFA_ANG_LO"]
    assert x["gender"] == "m" and x["level"] == "low" and x["text"] == "Don't forget a jacket" and x["age"] == "21"
    assert (
        by_key["cremad_1002_MTI_HAP_XX"]["gender"] == "f" and by_key["cremad_1002_MTI_HAP_XX"]["level"] == "unspecified"
    )
    assert by_key["cremad_1010_DFA_ANG_LO"]["gender"] == "u"  # actor missing from the demographics file


# ----------------------------------------------------------------------------- EmoDB


def test_emodb_codes_genders_and_pair_folds(tmp_path):
    root = tmp_path / "emodb"
    for spk in ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16"):
        for text, emo, ver in (
            ("a01", "W", "a"),
            ("a02", "F", "b"),
            ("b01", "T", "a"),
            ("b10", "N", "c"),
            ("a04", "L", "a"),
            ("a05", "E", "a"),
        ):
            tone(root / "wav" / f"{spk}{text}{emo}{ver}.wav")
    (root / "wav" / "notes.wav").write_bytes(b"")  # not an EmoDB name: ignored
    s = import_corpus("emodb", root, tmp_path / "out")
    assert_well_formed(tmp_path / "out", "de", "emodb")
    assert s.num_samples == 40 and s.dropped == {"boredom": 10, "disgust": 10} and s.num_skipped == 0
    assert s.split_speakers == {
        "train": ["emodb_03", "emodb_08", "emodb_09", "emodb_10", "emodb_11", "emodb_13"],
        "dev": ["emodb_12", "emodb_14"],
        "test": ["emodb_15", "emodb_16"],
    }
    x = {r["_key"]: r for r in samples(tmp_path / "out", "test")}["emodb_16a01Wa"]
    assert x["emotion"] == "anger" and x["gender"] == "f" and x["text"] == "Der Lappen liegt auf dem Eisschrank."
    assert {r["gender"] for r in samples(tmp_path / "out", "dev")} == {"m", "f"}
    loso = import_corpus("emodb", root, tmp_path / "loso", scheme="loso", fold=1)
    assert loso.split_speakers["test"] == ["emodb_03"] and loso.split_speakers["dev"] == ["emodb_16"]


# ----------------------------------------------------------------------------- CaFE


def test_cafe_accented_folders_aiff_24bit_and_neutral_names(tmp_path):
    root = tmp_path / "CaFE_192k_1"
    folders = {"C": "Colère", "J": "Joie", "T": "Tristesse", "P": "Peur", "D": "Degout"}  # accents optional
    for actor in range(1, 7):
        for letter, folder in folders.items():
            for level, sub in (("1", "Faible"), ("2", "Fort")):
                tone(
                    root / folder / sub / f"{actor:02d}-{letter}-{level}-{actor % 6 + 1}.aiff",
                    sr=48000,
                    subtype="PCM_24",
                )
        tone(root / "Neutre" / f"{actor:02d}-N-{actor % 6 + 1}.aiff", sr=48000, subtype="PCM_24")
    (root / "Readme.txt").write_text("CaFE readme")
    s = import_corpus("cafe", tmp_path, tmp_path / "out")
    assert_well_formed(tmp_path / "out", "fr", "cafe")
    assert s.num_samples == 6 * 7 and s.dropped == {"disgust": 12, "fear": 12}
    assert s.split_speakers == {
        "train": ["cafe_01", "cafe_02"],
        "dev": ["cafe_03", "cafe_04"],
        "test": ["cafe_05", "cafe_06"],
    }
    by_key = {x["_key"]: x for x in all_samples(tmp_path / "out")}
    x = by_key["cafe_05-C-2-6"]
    assert x["emotion"] == "anger" and x["intensity"] == "high" and x["gender"] == "m" and x["sentence"] == 6
    assert x["text"] == "Six ours aimants domestiqués"
    assert x["_sr"] == 48000 and x["_subtype"] == "PCM_24"  # original rate and 24-bit depth kept
    neutral = by_key["cafe_06-N-1"]
    assert neutral["emotion"] == "neutral" and "intensity" not in neutral and neutral["gender"] == "f"
    # the same recordings found twice (two copies of the release) are counted skips, not duplicates
    shutil.copytree(root, tmp_path / "copy" / "CaFE_192k_1")
    shutil.copytree(root, tmp_path / "copy" / "CaFE_48k")
    twice = import_corpus("cafe", tmp_path / "copy", tmp_path / "out2")
    assert twice.num_samples == 42 and twice.num_skipped == 42


# ----------------------------------------------------------------------------- FESC


def test_fesc_folder_convention(tmp_path):
    root = tmp_path / "fesc"
    for spk in ("F01", "M01", "F02", "M02", "F03", "M03"):
        for folder in ("viha", "ilo", "neutraali", "suru", "pelko"):
            for i in range(2):
                tone(root / spk / folder / f"{spk}_{folder}_{i}.wav")
    (root / "speakers.csv").write_text("speaker,gender\nF01,female\nM01,male\n")
    s = import_corpus("fesc", root, tmp_path / "out")
    assert_well_formed(tmp_path / "out", "fi", "fesc")
    assert s.num_samples == 6 * 4 * 2 and s.dropped == {"fear": 12}
    assert {len(v) for v in s.split_speakers.values()} <= {1, 2, 3, 4} and sum(map(len, s.split_speakers.values())) == 6
    x = {r["_key"]: r for r in all_samples(tmp_path / "out")}["fesc_M02_viha_M02_viha_0"]
    assert x["emotion"] == "anger" and x["gender"] == "m" and x["emotion_raw"] == "viha"


def test_fesc_labels_file_convention(tmp_path):
    root = tmp_path / "fesc"
    rows = ["path,emotion,speaker,gender,text"]
    for spk in ("s1", "s2", "s3", "s4"):
        for emo in ("viha", "ilo", "neutraali", "suru"):
            tone(root / "audio" / f"{spk}_{emo}.wav")
            rows.append(f"audio/{spk}_{emo}.wav,{emo},{spk},f,Hei.")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    s = import_corpus("fesc", root, tmp_path / "out")  # Finnish emotion names are understood
    assert s.num_samples == 16 and s.corpus == "fesc" and s.dropped == {}
    assert {x["language"] for x in all_samples(tmp_path / "out")} == {"fi"}
    assert {x["emotion"] for x in all_samples(tmp_path / "out")} == set(LABELS)
    s = import_corpus("fesc", root, tmp_path / "out2", label_map={"ilo": ""})  # a user map still wins
    assert s.num_samples == 12 and s.dropped == {"happiness": 4}  # counted by name, as in the folder convention


# ----------------------------------------------------------------------------- manifest


def make_manifest(root: Path, with_split: bool = True) -> Path:
    rows = ["path\temotion\tlanguage\tspeaker\tsplit\tgender\ttext\tsession\tage"]
    plan = {"train": ["a1", "a2"], "dev": ["a3"], "test": ["a4"]}
    for split, speakers in plan.items():
        for spk in speakers:
            for lang in ("en", "sv"):
                for emo in ("angry", "happy", "neutral", "sad", "fear"):
                    rel = f"{lang}/{spk}/{emo}.wav"
                    tone(root / rel, sr=44100, channels=2)
                    rows.append(
                        f"{rel}\t{emo}\t{lang}\t{lang}-{spk}\t{split if with_split else ''}\tfemale\t"
                        f"Text {emo}.\tS{spk[-1]}\t3{spk[-1]}"
                    )
    rows.append("sv/missing.wav\tsad\tsv\tsv-a1\ttrain\tf\tx\tS1\t30")
    path = root / "manifest.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_manifest_split_column_extra_fields_and_original_format(tmp_path):
    path = make_manifest(tmp_path / "m")
    s = import_corpus("manifest", path, tmp_path / "out")
    check_shard_dirs(tmp_path / "out")
    assert s.protocol == {"scheme": "manifest", "column": "split"}
    assert s.num_samples == 4 * 2 * 4 and s.dropped == {"fear": 8}
    assert s.num_skipped == 1 and s.skipped[0]["path"].endswith("missing.wav")
    assert s.counts["dev"] == {"en": {lab: 1 for lab in LABELS}, "sv": {lab: 1 for lab in LABELS}}
    assert sorted(p.name for p in (tmp_path / "out" / "train").glob("*.tar")) == [
        "manifest-en-000000.tar",
        "manifest-sv-000000.tar",
    ]
    x = {r["_key"]: r for r in samples(tmp_path / "out", "test")}["manifest_sv_a4_angry"]
    assert x["emotion"] == "anger" and x["emotion_raw"] == "angry" and x["language"] == "sv"
    assert x["session"] == "S4" and x["age"] == "34" and x["gender"] == "f" and x["text"] == "Text angry."
    assert x["_sr"] == 44100 and x["_channels"] == 2 and x["channels"] == 2 and x["source"] == "sv/a4/angry.wav"
    with pytest.raises(CorpusImportError, match="missing.wav"):
        import_corpus("manifest", path, tmp_path / "strict", strict=True)
    folds = import_corpus("manifest", path, tmp_path / "folds", scheme="folds")  # the split column ignored
    assert folds.protocol["scheme"] == "default" and folds.protocol["n_folds"] == 4


def test_manifest_without_split_gets_language_folds_and_leaks_are_refused(tmp_path):
    path = make_manifest(tmp_path / "m", with_split=False)
    s = import_corpus("manifest", path, tmp_path / "out")
    assert s.protocol["scheme"] == "default" and s.protocol["n_folds"] == 4
    for lang in ("en", "sv"):
        per_split = {split: [x for x in s.split_speakers[split] if x.startswith(lang)] for split in s.split_speakers}
        assert len(per_split["test"]) == 1 and len(per_split["dev"]) == 1 and len(per_split["train"]) == 2
    leak = tmp_path / "leak.tsv"
    rows = [
        "path\temotion\tlanguage\tspeaker\tsplit",
        "m/en/a1/sad.wav\tsad\ten\ten-a1\ttrain",
        "m/en/a1/happy.wav\thappy\ten\ten-a1\ttest",
        "m/en/a2/sad.wav\tsad\ten\ten-a2\tdev",
    ]
    leak.write_text("\n".join(rows) + "\n")
    with pytest.raises(SplitLeakError, match="en-a1"):
        import_corpus("manifest", leak, tmp_path / "leak_out")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.wav,sad\n")
    with pytest.raises(CorpusLayoutError, match=r"lacks column\(s\) \['path', 'emotion', 'speaker', 'language'\]"):
        import_corpus("manifest", bad, tmp_path / "bad_out")


# ----------------------------------------------------------------------------- shared behaviour


def test_registry_reimport_replaces_only_that_corpus(tmp_path):
    assert set(CORPORA) == {"iemocap", "fesc", "cafe", "ravdess", "cremad", "emodb", "manifest"}
    with pytest.raises(ValueError, match="unknown corpus 'savee'"):
        import_corpus("savee", tmp_path, tmp_path / "out")
    with pytest.raises(CorpusLayoutError, match="no Session1..Session5"):
        import_corpus("iemocap", tmp_path, tmp_path / "out")
    make_ravdess(tmp_path / "rav")
    make_manifest(tmp_path / "man")
    out = tmp_path / "out"
    import_corpus("ravdess", tmp_path / "rav", out)
    import_corpus("manifest", tmp_path / "man", out)
    first = {p.name for p in (out / "test").glob("*.tar")}
    assert first == {"ravdess-en-000000.tar", "manifest-en-000000.tar", "manifest-sv-000000.tar"}
    import_corpus("ravdess", tmp_path / "rav", out, fold=1)  # another fold: old ravdess shards must go
    idx = read_index(out / "test")
    assert {p.name for p in (out / "test").glob("*.tar")} == first
    assert "ravdess_01" in idx["speakers"] and "ravdess_24" not in idx["speakers"] and "en-a4" in idx["speakers"]
    assert "ravdess_24" in read_index(out / "dev")["speakers"]  # fold 1: dev = the last fold
    assert not list(out.glob(".staging*"))
    check_shard_dirs(out)
    rows = import_corpus("ravdess", tmp_path / "rav", out).rows()
    assert [(r["split"], r["total"], r["speakers"]) for r in rows] == [
        ("train", 80, 16),
        ("dev", 20, 4),
        ("test", 20, 4),
    ]
    assert json.dumps(import_corpus("ravdess", tmp_path / "rav", out).as_dict())  # JSON-serialisable summary


def test_a_corpus_is_a_spec_with_shared_options(tmp_path):
    """A new corpus needs only a scan and its folds; language, name and splits come from `prepare`."""

    def scan(ctx):
        found = Scan()
        for path in sorted(ctx.root.glob("*/*.wav")):
            speaker = f"{ctx.corpus}_{path.parent.name}"
            emotion = canonical_emotion(path.stem, ctx.labels)
            found.utterances.append(Utterance(path, f"{speaker}_{path.stem}", emotion, speaker, ctx.language))
        return found

    spec = CorpusSpec("toy", "sv", scan, speaker_blocks(3), "<speaker>/<emotion>.wav")
    for speaker in "abc":
        for emotion in ("angry", "happy", "neutral", "sad", "bored"):
            tone(tmp_path / "src" / speaker / f"{emotion}.wav")
    s = prepare(spec, tmp_path / "src", tmp_path / "out", language="sv-fi", corpus="Toy-2")
    assert s.corpus == "toy_2" and s.num_samples == 12 and s.dropped == {"boredom": 3}
    assert s.split_speakers == {"train": ["toy_2_a"], "dev": ["toy_2_b"], "test": ["toy_2_c"]}
    assert {x["language"] for x in all_samples(tmp_path / "out")} == {"sv-fi"}
    with pytest.raises(CorpusLayoutError, match="toy: root .* is not a directory .*<speaker>/<emotion>.wav"):
        prepare(spec, tmp_path / "absent", tmp_path / "out")
    with pytest.raises(TypeError, match="merge_excitement"):  # IEMOCAP's option is not RAVDESS's
        import_corpus("ravdess", tmp_path / "src", tmp_path / "out", merge_excitement=False)
