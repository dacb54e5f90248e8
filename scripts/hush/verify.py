"""Check the torch Whisper against CTranslate2's own outputs (from reference.py).

For each clip and input (padded 30 s window, truncated content): the largest and mean absolute
difference of the encoder outputs, and whether plain greedy decoding gives the same tokens (and
about the same mean log-probability). Weights either straight from model.bin (float16) or from the
int8 packs that travel to the GPU machine.

    python verify.py .hush/ref.npz --model-bin /root/.cache/wis_wyoming/models/base/model.bin
    python verify.py .hush/ref.npz --packs .hush/weights/base-encoder.npz .hush/weights/base-decoder.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from whisper_torch import Whisper, load_packs

WINDOW = 3000


def verify(model: Whisper, ref_path: Path) -> bool:
    ref = np.load(ref_path)
    prompt = [int(t) for t in ref["prompt"]]
    eot = int(ref["eot"])
    ok = True
    clips = sorted(int(k[len("content") :]) for k in ref.files if k.startswith("content"))
    for i in clips:
        content = ref[f"content{i}"]
        inputs = {
            "padded": np.pad(content, ((0, 0), (0, WINDOW - content.shape[1]))),
            "short": content[:, : content.shape[1] // 2 * 2],
        }
        for label, mel in inputs.items():
            with torch.no_grad():
                encoded = model.encode(torch.tensor(mel[None], device=model.device))
            expected = ref[f"enc_{label}{i}"].astype(np.float32)
            diff = np.abs(encoded[0].cpu().numpy() - expected)
            expected_tokens = [int(t) for t in ref[f"tok_{label}{i}"]]
            tokens, total = model.greedy(prompt, encoded, eot, max_new=len(expected_tokens) + 1)
            # CTranslate2 leaves the end-of-text token out (and stops at its max_length).
            same = tokens[: len(expected_tokens)] == expected_tokens
            ok &= same
            print(
                f"clip {i} {label:>6}: encoder max|diff| {diff.max():.4f} mean {diff.mean():.5f} "
                f"(|ref| mean {np.abs(expected).mean():.3f}); greedy tokens "
                f"{'identical' if same else 'DIFFER'} ({len(tokens)}), mean logprob "
                f"{total / max(1, len(expected_tokens)):.4f} vs ct2 {float(ref[f'score_{label}{i}']):.4f}"
            )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ref", type=Path)
    parser.add_argument("--model-bin", type=Path)
    parser.add_argument("--packs", type=Path, nargs="*")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.model_bin:
        from ct2_reader import read_model

        variables = read_model(args.model_bin)[2]
    else:
        variables = load_packs(args.packs)
    torch.backends.cuda.matmul.allow_tf32 = False
    ok = verify(Whisper(variables, args.device), args.ref)
    print("torch port matches ctranslate2" if ok else "torch port DIFFERS from ctranslate2")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
