"""Learned hush segments: the end-of-speech cue that lets a multilingual model skip the padding.

Whisper's decoder was trained on 30 s windows. Give it the encoder output of 3 s of speech alone
and it runs on, repeats itself, or copies its prompt. The English-only models are served by
splicing the encoder output of silence after the speech (see encoder_window), but base copies
its prompt that way ("He hoped there would be stew for dinner. He hoped there would be stew
for"). WhisperFlow's answer is a short "hush word" appended to the input, learned with the model
frozen, so that the model transcribes the speech and stops. Here the hush is a block of log-mel
features (80 x N, in faster-whisper's normalised scale), trained per model by scripts/hush/ and
shipped in assets/hush/ with the identity of the weights it was trained on: it is used only
with exactly those weights.

base's hush (100 frames) was trained on 2 CPU cores, no GPU being at hand. On librispeech +
commands + misc with VAD, greedy: WER 12.07 % against 11.29 % padded (librispeech 5.07 against
4.78 %), in 386 against 1341 ms per clip. That fails the issue's 0.3-point gate for whole
requests, so base serves whole requests, pauses and the end on the padded window, and its
streaming updates, whose words count only once the next pass agrees, on the hush.

Most of base's streamed long-form WER on test-other (8.7-12.2 % against 5.97 % offline) goes with
the drafts. Streamed with every update on the padded window, it read 6.5-8.7 % in three runs
(and drafts that waited until a pass heard 2 s past each word, 9.45 and 10.45 %), though on single
buffers and prompts where drafts went wrong, the padded window often hears the same words
("martial" for "marshal", "am I so" for "and my soul"): the difference is in how often passes
agree on such a word, not in one decode. Drafts on the truncated 10 s window (speech and
silence, nothing spliced) streamed it at 9.5 and 10.0 %, on spliced silence 13-17 %.

Training this hush longer does not close that gap. Two more epochs on its data (hard targets),
then five more with the padded window's token distributions as teacher (train.py --soft, 25 min
with --bf16 on 2 CPU cores), took the held-out cross-entropy from 0.81 to 0.79 and 0.73; but on
draft_crops.py's 150 crops of each LibriSpeech stream (cut where drafts are, prompted, scored on
the words a stream could commit), the words heard otherwise than offline were: test-other 3.52 %
padded, 3.51 % this hush, 4.13 and 3.53 % the retrained ones; test-clean 2.84, 3.35, 3.07, 3.07 %.
Streamed, the first retrained hush read test-other at 10.95, 10.70 and 9.95 %.

Those words are not where streams commit, though: most commits come from a pass that heard only
0.25-0.5 s past the word. draft_crops.py also scores that edge (words ending 0.25-1 s before the
cut), and there this hush is worse than the padded window on test-other: of about 500 such words
in 300 crops, 40-44 heard otherwise than offline against 31 (test-clean: 18 against 16). The
errors of a streamed run agree: replaying the 13 passes that committed them (same buffer and
context), the padded window had 7 right. Two ways to close it, both measured on test-other:
- a 15 s window of speech and faster-whisper's zero padding (no hush, nothing spliced) hears the
  edge as the padded one does (28 of 531; 10 s: 56, 20 s: 36) and streamed at 7.21, 7.96 and
  9.70 %, but its drafts took 0.50 s against 0.36 s, which on 2 cores put the commit latency at
  p50 1.28-1.41 s and p95 2.9-3.1 s (this hush, the same day: 8.96 and 12.69 % at p50 1.04-1.13
  s, p95 2.05-2.26 s; all three long-form files pooled, +2.69 points against +1.74 for the
  15 s window);
- this hush trained two more epochs with the last 4 text tokens of each target weighted 3 times
  (train.py --edge-weight 3; held-out edge cross-entropy 0.69 -> 0.59): 33 edge errors against
  44, but 257 settled ones against 234, and streamed at 9.45 and 8.46 %, inside this hush's
  spread.
Two cheaper drafts heard the edge little better than this hush (44 of 506), in one run of the same
300 crops (draft_crops.py --gap, --beam): 1, 2 or 4 s of zero padding between the speech and the
hush, 36, 41 and 40 of about 500 at about a draft's cost (427-475 ms a crop against 447); beam 2,
38 of 478 for a third more time. So on this CPU the edge costs latency to hear better, and the
asset is unchanged. Where a pass on the padded window is about as fast as a draft (a GPU),
streams take no drafts at all (see streaming's draft_above_seconds).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundled import READY_MARKER, file_sha256

_LOGGER = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets" / "hush"


@dataclass(frozen=True)
class Hush:
    name: str
    features: np.ndarray  # (80, frames) float32, appended after the speech's features
    model_size: int  # the model.bin it was trained on
    model_sha256: str


def _known_sha256(model_dir: Path) -> str | None:
    """The checksum the bundled-model assembly recorded, if it prepared this directory."""
    try:
        return json.loads((model_dir / READY_MARKER).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None


def available(assets: Path = ASSETS) -> list[Hush]:
    found = []
    for meta in sorted(assets.glob("*.json")):
        try:
            info = json.loads(meta.read_text())
            features = np.load(meta.with_suffix(".npy")).astype(np.float32)
            found.append(Hush(meta.stem, features, int(info["model_size"]), str(info["model_sha256"])))
        except (OSError, ValueError, KeyError) as err:
            _LOGGER.warning("Ignoring hush segment %s: %s", meta.name, err)
    return found


def hush_for(model_dir: Path, assets: Path = ASSETS) -> Hush | None:
    """The hush trained on this model's weights, if one ships."""
    weights = model_dir / "model.bin"
    try:
        size = weights.stat().st_size
    except OSError:
        return None
    candidates = [h for h in available(assets) if h.model_size == size]
    if not candidates:
        return None
    sha256 = _known_sha256(model_dir) or file_sha256(weights)
    return next((h for h in candidates if h.model_sha256 == sha256), None)
