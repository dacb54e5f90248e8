"""Convert a CTranslate2 Whisper model.bin into two packs small enough for the GPU machine.

Each call to the GPU machine carries at most 64 MiB; base's float16 model.bin is 145 MB. The
encoder pack keeps the encoder in float16, exactly as stored (~42 MB): the hush is learned through
it, and per-row int8 moved its outputs visibly (max |diff| ~8 on values of mean magnitude 0.7).
The decoder pack stores every decoder matrix of at least 2**17 values, the token embedding
included, as per-row int8 with a float16 scale (what CTranslate2's int8 does to weights), the rest
as float16 (~52 MB); greedy tokens stay identical to CTranslate2's (see verify.py).

    .venv/bin/python scripts/hush/convert.py /root/.cache/wis_wyoming/models/base .hush/weights
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ct2_reader import read_model

QUANTIZE_MIN = 1 << 17


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = matrix.astype(np.float32).reshape(matrix.shape[0], -1)
    scale = np.abs(rows).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    quantized = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
    return quantized.reshape(matrix.shape), scale.astype(np.float16)


def pack(variables: dict[str, np.ndarray], names: list[str], quantize: bool) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in names:
        value = variables[name]
        if value.ndim == 0 or not np.issubdtype(value.dtype, np.floating):
            continue
        if quantize and value.ndim >= 2 and value.size >= QUANTIZE_MIN and "position_encodings" not in name:
            out[name + "::q"], out[name + "::s"] = quantize_rows(value)
        else:
            out[name] = value.astype(np.float16)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    _, _, variables = read_model(args.model_dir / "model.bin")
    names = sorted(n for n in variables if n != "decoder/projection/weight")  # tied to embeddings
    encoder = [n for n in names if n.startswith("encoder/")]
    decoder = [n for n in names if n not in encoder]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for label, part, quantize in (("encoder", encoder, False), ("decoder", decoder, True)):
        path = args.out_dir / f"base-{label}.npz"
        np.savez(path, **pack(variables, part, quantize))
        print(path, path.stat().st_size / 1e6, "MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
