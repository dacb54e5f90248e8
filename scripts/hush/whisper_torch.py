"""A small Whisper (encoder + decoder) in plain torch, loaded from CTranslate2's variables.

Only torch and numpy: it runs on the GPU machine (which has no ctranslate2) and on a CPU torch
here. Variables come from `ct2_reader.read_model` (float16 as stored) or from the int8 packs of
`convert.py` (per-row int8 with float scales, dequantized on load), so the weights can travel in
two sub-64 MiB halves.

CTranslate2's Whisper layout: self-attention `linear_0` is the fused q/k/v projection (the key's
bias is zero), `linear_1` its output; cross-attention `linear_0` is the query, `linear_1` the
fused key/value, `linear_2` the output; GELU (erf); pre-norm layers; the output projection is
the token embedding.

Batches of different encoder lengths are exact with right padding: the padded mel frames are
zeros (which is what conv1's own padding sees past the end), conv2 (stride 2) never reaches past
an even length, and attention masks the padded positions out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

D_MODEL = 512
HEADS = 8
LAYERS = 6
EPS = 1e-5


def load_packs(paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """Merge int8 packs written by convert.py back into float32 variables."""
    out: dict[str, np.ndarray] = {}
    for path in paths:
        with np.load(path) as pack:
            for key in pack.files:
                if key.endswith("::q"):
                    name = key[:-3]
                    scale = pack[name + "::s"].astype(np.float32)
                    values = pack[key].astype(np.float32)
                    out[name] = values * scale.reshape((-1,) + (1,) * (values.ndim - 1))
                elif not key.endswith("::s"):
                    out[key] = pack[key].astype(np.float32)
    return out


class Whisper:
    """Frozen Whisper weights and the functional forward passes over them."""

    def __init__(self, variables: Mapping[str, np.ndarray], device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.p: dict[str, torch.Tensor] = {}
        for name, value in variables.items():
            array = np.asarray(value)
            if array.ndim == 0 or not np.issubdtype(array.dtype, np.floating):
                continue
            self.p[name] = torch.tensor(array.astype(np.float32), device=self.device)
        self.layers = LAYERS

    # -- building blocks -------------------------------------------------------------------
    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (D_MODEL,), self.p[name + "/gamma"], self.p[name + "/beta"], EPS)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.p[name + "/weight"], self.p.get(name + "/bias"))

    @staticmethod
    def _heads(x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, HEADS, D_MODEL // HEADS).transpose(1, 2)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, D_MODEL)

    def _self_attention(
        self, x: torch.Tensor, prefix: str, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        q, k, v = self._linear(x, prefix + "/linear_0").split(D_MODEL, dim=-1)
        out = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v), attn_mask=mask, is_causal=causal
        )
        return self._linear(self._merge(out), prefix + "/linear_1")

    def _ffn(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        hidden = F.gelu(self._linear(x, prefix + "/linear_0"))
        return self._linear(hidden, prefix + "/linear_1")

    # -- encoder ---------------------------------------------------------------------------
    def encode(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """mel: [B, 80, T] (T even; frames past each length must be zero) -> [B, T/2, 512]."""
        x = F.gelu(F.conv1d(mel, self.p["encoder/conv1/weight"], self.p["encoder/conv1/bias"], padding=1))
        x = F.gelu(
            F.conv1d(x, self.p["encoder/conv2/weight"], self.p["encoder/conv2/bias"], stride=2, padding=1)
        )
        x = x.transpose(1, 2)
        x = x + self.p["encoder/position_encodings/encodings"][: x.shape[1]]
        mask = None if lengths is None else self.encoder_mask(lengths, x.shape[1])
        attn_mask = None if mask is None else mask[:, None, None, :]
        for i in range(self.layers):
            prefix = f"encoder/layer_{i}"
            x = x + self._self_attention(
                self._ln(x, prefix + "/self_attention/layer_norm"),
                prefix + "/self_attention",
                attn_mask,
                False,
            )
            x = x + self._ffn(self._ln(x, prefix + "/ffn/layer_norm"), prefix + "/ffn")
        return self._ln(x, "encoder/layer_norm")

    def encoder_mask(self, lengths: torch.Tensor, positions: int) -> torch.Tensor:
        """[B, positions] True where an encoder position holds input (lengths in mel frames)."""
        index = torch.arange(positions, device=lengths.device)
        return index[None, :] < (lengths[:, None] // 2)

    # -- decoder ---------------------------------------------------------------------------
    def decode(
        self,
        tokens: torch.Tensor,
        encoded: torch.Tensor,
        encoder_mask: torch.Tensor | None = None,
        select: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens: [B, S] (right-padded), encoded: [B, Te, 512] -> logits [B, S, vocab], or
        [positions, vocab] for the positions a boolean [B, S] `select` picks."""
        embeddings = self.p["decoder/embeddings/weight"]
        x = embeddings[tokens] + self.p["decoder/position_encodings/encodings"][: tokens.shape[1]]
        cross_mask = None if encoder_mask is None else encoder_mask[:, None, None, :]
        for i in range(self.layers):
            prefix = f"decoder/layer_{i}"
            x = x + self._self_attention(
                self._ln(x, prefix + "/self_attention/layer_norm"), prefix + "/self_attention", None, True
            )
            h = self._ln(x, prefix + "/attention/layer_norm")
            q = self._linear(h, prefix + "/attention/linear_0")
            k, v = self._linear(encoded, prefix + "/attention/linear_1").split(D_MODEL, dim=-1)
            out = F.scaled_dot_product_attention(
                self._heads(q), self._heads(k), self._heads(v), attn_mask=cross_mask
            )
            x = x + self._linear(self._merge(out), prefix + "/attention/linear_2")
            x = x + self._ffn(self._ln(x, prefix + "/ffn/layer_norm"), prefix + "/ffn")
        x = self._ln(x, "decoder/layer_norm")
        if select is not None:
            x = x[select]
        return x @ embeddings.T

    @torch.no_grad()
    def greedy(
        self, prompt: Sequence[int], encoded: torch.Tensor, eot: int, max_new: int = 100
    ) -> tuple[list[int], float]:
        """Plain argmax decoding of one sequence (no suppression): tokens and summed log-prob."""
        tokens = list(prompt)
        total = 0.0
        for _ in range(max_new):
            logits = self.decode(torch.tensor([tokens], device=self.device), encoded)[0, -1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            token = int(torch.argmax(logprobs))
            total += float(logprobs[token])
            tokens.append(token)
            if token == eot:
                break
        return tokens[len(prompt) :], total
