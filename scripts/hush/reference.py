"""CTranslate2's own outputs on real clips, for checking the torch port (verify.py) against them.

Writes an npz with, per clip: faster-whisper's features (content frames), CTranslate2's encoder
output (float32 compute) for the padded 30 s window and for the truncated content, and its plain
greedy tokens (no suppression, no timestamps) with their summed log-probability.

    .venv/bin/python scripts/hush/reference.py /root/.cache/wis_wyoming/models/base .hush/ref.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio
from faster_whisper.tokenizer import Tokenizer

SPEECH = Path("/work/shared/speech")
CLIPS = ("librispeech/1089-134686-0000", "misc/jfk", "commands/cancel_all_timers")
WINDOW = 3000


def content_features(model: WhisperModel, path: Path) -> np.ndarray:
    """The frames faster-whisper's transcribe decodes for a clip of up to 30 s (before padding)."""
    audio = decode_audio(str(path), sampling_rate=16000)
    features = model.feature_extractor(audio)
    return features[:, : features.shape[-1] - 1].astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--clips", nargs="+", default=list(CLIPS))
    parser.add_argument("--half", action="store_true", help="store encoder outputs as float16 (smaller)")
    args = parser.parse_args()
    model = WhisperModel(str(args.model_dir), device="cpu", compute_type="float32", cpu_threads=2)
    tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language="en")
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    out: dict[str, np.ndarray] = {"prompt": np.array(prompt), "eot": np.array(tokenizer.eot)}
    for i, clip in enumerate(args.clips):
        content = content_features(model, SPEECH / f"{clip}.wav")
        even = content[:, : content.shape[1] // 2 * 2]
        padded = np.pad(content, ((0, 0), (0, WINDOW - content.shape[1])))
        out[f"content{i}"] = content
        for label, mel in (("padded", padded), ("short", even)):
            view = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))
            encoded = model.model.encode(view, to_cpu=True)
            out[f"enc_{label}{i}"] = np.array(encoded)[0].astype(np.float16 if args.half else np.float32)
            result = model.model.generate(
                encoded,
                [prompt],
                beam_size=1,
                suppress_blank=False,
                suppress_tokens=[],
                return_scores=True,
                max_length=120,
            )[0]
            tokens = result.sequences_ids[0]
            out[f"tok_{label}{i}"] = np.array(tokens)
            out[f"score_{label}{i}"] = np.array(result.scores[0])
            print(clip, label, tokenizer.decode(tokens), result.scores[0])
    np.savez(args.out, **out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
