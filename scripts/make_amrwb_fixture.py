"""Encode a 16 kHz mono WAV as AMR-WB (the MIME storage format Willow devices send).

PyAV's FFmpeg has AMR-WB decoders only, so the encoder is VisualOn's libvo-amrwbenc
(`apt-get install libvo-amrwbenc0`), called through ctypes. `E_IF_encode` takes 320 samples
(20 ms) and writes one storage frame: a table-of-contents byte, then the speech bits.

    .venv/bin/python scripts/make_amrwb_fixture.py ../shared/speech/commands/lock_the_Front_Door.wav \\
        tests/fixtures/lock_the_Front_Door.amr
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import wave
from pathlib import Path

import numpy as np

MAGIC = b"#!AMR-WB\n"
FRAME_SAMPLES = 320  # 20 ms at 16 kHz
MAX_FRAME_BYTES = 61  # mode 8 (23.85 kbit/s): 1 header byte + 60 payload bytes
MODES_KBPS = (6.6, 8.85, 12.65, 14.25, 15.85, 18.25, 19.85, 23.05, 23.85)


def load_encoder() -> ctypes.CDLL:
    name = ctypes.util.find_library("vo-amrwbenc") or "libvo-amrwbenc.so.0"
    try:
        library = ctypes.CDLL(name)
    except OSError as err:
        raise SystemExit(f"cannot load {name}: {err} (apt-get install libvo-amrwbenc0)") from err
    library.E_IF_init.restype = ctypes.c_void_p
    library.E_IF_init.argtypes = []
    library.E_IF_encode.restype = ctypes.c_int
    library.E_IF_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_short),
        ctypes.POINTER(ctypes.c_ubyte),
        ctypes.c_int,
    ]
    library.E_IF_exit.restype = None
    library.E_IF_exit.argtypes = [ctypes.c_void_p]
    return library


def read_pcm(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        if (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) != (16000, 2, 1):
            raise SystemExit(f"{path} must be 16 kHz, 16-bit mono")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def encode_amrwb(samples: np.ndarray, mode: int = 8) -> bytes:
    """16 kHz 16-bit mono samples as an AMR-WB file (the last frame padded with silence)."""
    if not 0 <= mode < len(MODES_KBPS):
        raise ValueError(f"mode must be from 0 to {len(MODES_KBPS) - 1}")
    library = load_encoder()
    padded = np.zeros(-(-len(samples) // FRAME_SAMPLES) * FRAME_SAMPLES, dtype=np.int16)
    padded[: len(samples)] = samples
    state = library.E_IF_init()
    if not state:
        raise RuntimeError("E_IF_init failed")
    out = (ctypes.c_ubyte * MAX_FRAME_BYTES)()
    frames = [MAGIC]
    try:
        for start in range(0, len(padded), FRAME_SAMPLES):
            frame = np.ascontiguousarray(padded[start : start + FRAME_SAMPLES])
            speech = frame.ctypes.data_as(ctypes.POINTER(ctypes.c_short))
            size = library.E_IF_encode(state, mode, speech, out, 0)
            if not 0 < size <= MAX_FRAME_BYTES:
                raise RuntimeError(f"E_IF_encode returned {size}")
            frames.append(bytes(out[:size]))
    finally:
        library.E_IF_exit(state)
    return b"".join(frames)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("wav", type=Path, help="16 kHz 16-bit mono WAV")
    parser.add_argument("output", type=Path, help="the .amr file to write")
    parser.add_argument("--mode", type=int, default=8, help="0-8: 6.6 to 23.85 kbit/s (8)")
    args = parser.parse_args()
    data = encode_amrwb(read_pcm(args.wav), args.mode)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    print(f"{args.output}: {len(data)} bytes, {(len(data) - len(MAGIC))} bytes of frames")


if __name__ == "__main__":
    main()
