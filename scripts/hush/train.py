"""Learn the hush: a short segment of log-mel features, appended after the speech, that makes a
frozen Whisper transcribe what was said and then end, without the 30 s window's padding.

Written for a GPU machine with torch (no ctranslate2 or faster-whisper needed: it reads the
weight packs of convert.py, the data of prep_data.py and the reference of reference.py), and
also runs on a CPU torch (`--bf16` roughly halves the time there); the asset in the repository was
trained on 2 CPU cores, since no GPU was lent to that task.

1. Optionally checks the torch model against CTranslate2's outputs (verify.py) on this device.
2. Optionally (--soft > 0) a teacher: the same frozen model on each example's padded 30 s window
   (what faster-whisper encodes), teacher-forced on the targets; its top-k next-token
   distribution is kept.
3. For each hush length N: H (80 x N) starts as what faster-whisper's padding looks like (zeros),
   or from --init, and is the only trainable tensor; the encoder input is concat(speech frames,
   H), one zero frame more if the length is odd. A step encodes a bucket of examples of similar
   length once and decodes all their target sequences (with/without timestamps, with/without a
   previous-text prompt). Loss: cross-entropy on the target tokens, end-of-text included, plus
   --end-weight times the stopping terms (see batch_loss), plus --edge-weight times the
   cross-entropy of each target's last --edge-tokens text tokens, plus the teacher term. Adam with
   warm-up and cosine decay; the H with the best validation objective is kept.
4. Validation on clips held out of the training sources: cross-entropy of the truncated input,
   of the initial H and of H, and the share of sequences that stop where the padded path does;
   optionally greedy decoding (exact match with the padded path's transcript, clean end).

    python3 scripts/hush/train.py --packs W/base-encoder.npz W/base-decoder.npz \
        --data .hush/data --ref .hush/ref.npz --lengths 50 100 --out $OUT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from verify import verify
from whisper_torch import Whisper, load_packs

WINDOW = 3000
TOP_K = 16
TIMESTAMP_BEGIN = 50364  # multilingual vocabulary: <|0.00|>


@dataclass
class Sequence:
    example: int
    tokens: list[int]  # prefix + target (end-of-text last)
    prefix_len: int
    timestamps: bool
    teacher_ids: torch.Tensor | None = None  # [target_len, TOP_K]
    teacher_probs: torch.Tensor | None = None


def load_data(dirs: list[Path]) -> tuple[list[dict], list[np.ndarray]]:
    examples: list[dict] = []
    shards: dict[int, np.ndarray] = {}
    for folder in dirs:
        if (folder / "examples.json").exists():
            examples = json.loads((folder / "examples.json").read_text())
        for path in folder.glob("feats*.npy"):
            shards[int(path.stem[len("feats") :])] = np.load(path)
    features = [
        shards[e["shard"]][:, e["offset"] : e["offset"] + e["frames"]].astype(np.float32) for e in examples
    ]
    return examples, features


def split_by_clip(examples: list[dict], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    clips = sorted({e["clip"] for e in examples})
    random.Random(seed).shuffle(clips)
    held = set(clips[: max(1, int(len(clips) * fraction))])
    train = [i for i, e in enumerate(examples) if e["clip"] not in held]
    val = [i for i, e in enumerate(examples) if e["clip"] in held]
    return train, val


def encoder_input(content: torch.Tensor, hush: torch.Tensor | None) -> torch.Tensor:
    """Speech frames then the hush, one zero frame more if the length is odd (conv2 has stride 2);
    None: the truncated window; an empty hush: the padded 30 s window."""
    if hush is None:
        return content[:, : content.shape[-1] // 2 * 2]
    if hush.shape[-1] == 0:
        return F.pad(content, (0, WINDOW - content.shape[-1]))
    mel = torch.cat([content, hush], dim=-1)
    return F.pad(mel, (0, mel.shape[-1] % 2))


def pad_batch(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([m.shape[-1] for m in mels], device=mels[0].device)
    batch = torch.zeros(len(mels), 80, int(lengths.max()), device=mels[0].device)
    for i, mel in enumerate(mels):
        batch[i, :, : mel.shape[-1]] = mel
    return batch, lengths


def token_batch(seqs: list[Sequence], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (all tokens but the last) and a mask of the positions that predict a target token."""
    width = max(len(s.tokens) - 1 for s in seqs)
    inputs = torch.zeros(len(seqs), width, dtype=torch.long, device=device)
    predicts = torch.zeros(len(seqs), width, dtype=torch.bool, device=device)
    for i, s in enumerate(seqs):
        inputs[i, : len(s.tokens) - 1] = torch.tensor(s.tokens[:-1], device=device)
        predicts[i, s.prefix_len - 1 : len(s.tokens) - 1] = True
    return inputs, predicts


def targets_of(seqs: list[Sequence], device: torch.device) -> torch.Tensor:
    return torch.tensor([t for s in seqs for t in s.tokens[s.prefix_len :]], device=device)


@torch.no_grad()
def build_teacher(
    model: Whisper, by_example: dict[int, list[Sequence]], features: list[torch.Tensor]
) -> None:
    for example, group in by_example.items():
        encoded = model.encode(encoder_input(features[example], features[example][:, :0])[None])
        inputs, predicts = token_batch(group, model.device)
        logits = model.decode(inputs, encoded.expand(len(group), -1, -1), select=predicts)
        top = torch.softmax(logits.float(), dim=-1).topk(TOP_K, dim=-1)
        start = 0
        for s in group:
            count = len(s.tokens) - s.prefix_len
            s.teacher_probs = top.values[start : start + count].half()
            s.teacher_ids = top.indices[start : start + count]
            start += count


def save_teacher(path: Path, by_example: dict[int, list[Sequence]]) -> None:
    """The teacher's distributions (on CPU a few minutes to build), per example and sequence."""
    torch.save(
        {e: [(s.teacher_ids.cpu(), s.teacher_probs.cpu()) for s in group] for e, group in by_example.items()},  # type: ignore[union-attr]
        path,
    )


def load_teacher(path: Path, by_example: dict[int, list[Sequence]], device: torch.device) -> None:
    kept = torch.load(path, map_location=device)
    for example, group in by_example.items():
        for s, (ids, probs) in zip(group, kept[example], strict=True):
            s.teacher_ids, s.teacher_probs = ids, probs


@dataclass
class BatchResult:
    loss: torch.Tensor
    ce: float  # mean cross-entropy per target token
    tokens: int
    end: float  # mean end-of-text terms (cross-entropy + margin over the timestamps)
    clean: int  # sequences that stop where the target does, under faster-whisper's timestamp rules
    sequences: int
    edge: float = 0.0  # mean cross-entropy of each sequence's last `edge_tokens` text tokens


def edge_positions(seqs: list[Sequence], count: int) -> list[int]:
    """Indices (into the concatenated targets) of each sequence's last `count` text tokens: the
    words at the end of the audio, which a streaming draft commits after hearing little past them
    (on shared/speech/longform test-other, the shipped hush hears those worse than the padded
    window does; see draft_crops.py)."""
    positions: list[int] = []
    start = 0
    for s in seqs:
        target = s.tokens[s.prefix_len :]
        text = [start + j for j, token in enumerate(target[:-1]) if token < TIMESTAMP_BEGIN]
        positions += text[-count:]
        start += len(target)
    return positions


def end_positions(seqs: list[Sequence]) -> tuple[list[int], list[int], list[int]]:
    """Indices (into the concatenated targets) of each sequence's end-of-text, of the closing
    timestamps right after the last word, and which sequences those closing timestamps belong to."""
    ends, closes, closed = [], [], []
    start = 0
    for k, s in enumerate(seqs):
        target = s.tokens[s.prefix_len :]
        start += len(target)
        ends.append(start - 1)
        if s.timestamps and len(target) >= 3 and target[-2] >= TIMESTAMP_BEGIN > target[-3]:
            closes.append(start - 2)
            closed.append(k)
    return ends, closes, closed


def batch_loss(
    model: Whisper,
    hush: torch.Tensor | None,
    examples: list[int],
    by_example: dict[int, list[Sequence]],
    features: list[torch.Tensor],
    soft: float = 0.0,
    end_weight: float = 0.0,
    edge_weight: float = 0.0,
    edge_tokens: int = 4,
) -> BatchResult:
    """Mean cross-entropy over all target tokens of the examples' sequences, each example encoded
    once; plus `end_weight` times the stopping terms: the end-of-text's cross-entropy and, where
    timestamps are on, its margin over all timestamps together, and the closing timestamp's margin
    (as a class) over the text tokens (faster-whisper's decoder forces a timestamp whenever their
    summed probability beats every text token's); plus `edge_weight` times the cross-entropy of
    the last `edge_tokens` text tokens of each sequence; plus the teacher term."""
    batch, lengths = pad_batch([encoder_input(features[e], hush) for e in examples])
    encoded = model.encode(batch, lengths)
    mask = model.encoder_mask(lengths, encoded.shape[1])
    seqs = [s for e in examples for s in by_example[e]]
    rows = torch.tensor([k for k, e in enumerate(examples) for _ in by_example[e]], device=model.device)
    inputs, predicts = token_batch(seqs, model.device)
    logits = model.decode(inputs, encoded[rows], mask[rows], select=predicts).float()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = targets_of(seqs, model.device)
    hard = F.nll_loss(logprobs, targets)
    ends, closes, closed = end_positions(seqs)
    ends_t = torch.tensor(ends, device=model.device)
    text_best = logprobs[:, :TIMESTAMP_BEGIN].max(-1).values
    timestamps_all = torch.logsumexp(logprobs[:, TIMESTAMP_BEGIN:], dim=-1)
    eot_logprob = logprobs[ends_t].gather(1, targets[ends_t][:, None])[:, 0]
    timed = torch.tensor([s.timestamps for s in seqs], device=model.device)
    # End-of-text wins: over every text token, and where timestamps are on, over their sum too.
    ok = (eot_logprob >= text_best[ends_t]) & (~timed | (eot_logprob > timestamps_all[ends_t]))
    end = F.nll_loss(logprobs[ends_t], targets[ends_t])
    if bool(timed.any()):
        end = end + F.softplus(timestamps_all[ends_t][timed] - eot_logprob[timed]).mean()
    if closes:
        # After the last word, a (closing) timestamp must win over every text token.
        closes_t = torch.tensor(closes, device=model.device)
        text_all = torch.logsumexp(logprobs[closes_t, :TIMESTAMP_BEGIN], dim=-1)
        end = end + F.softplus(text_all - timestamps_all[closes_t]).mean()
        close_ok = timestamps_all[closes_t] > text_best[closes_t]
        ok[torch.tensor(closed, device=model.device)] &= close_ok
    edge_t = torch.tensor(edge_positions(seqs, edge_tokens), device=model.device, dtype=torch.long)
    edge = F.nll_loss(logprobs[edge_t], targets[edge_t]) if len(edge_t) else hard.new_zeros(())
    loss = hard + end_weight * end + edge_weight * edge
    if soft > 0:
        ids = torch.cat([s.teacher_ids for s in seqs])  # type: ignore[misc]
        # Cast each before joining: under CPU bf16 autocast, cat refuses float16 inputs.
        probs = torch.cat([s.teacher_probs.float() for s in seqs])  # type: ignore[union-attr]
        probs = probs / probs.sum(-1, keepdim=True)
        loss = loss + soft * -(probs * logprobs.gather(1, ids)).sum(-1).mean()
    return BatchResult(loss, hard.item(), len(targets), end.item(), int(ok.sum()), len(seqs), edge.item())


def validate(
    model: Whisper,
    hush: torch.Tensor | None,
    examples: list[int],
    by_example: dict[int, list[Sequence]],
    features: list[torch.Tensor],
    autocast: contextlib.AbstractContextManager,
    end_weight: float,
    edge_weight: float = 0.0,
    edge_tokens: int = 4,
) -> dict[str, float]:
    """Cross-entropy per target token, the end-of-text terms, the edge tokens' cross-entropy, the
    training objective, and the share of sequences that stop cleanly (greedy, given the target so
    far)."""
    ce = end = edge = clean = timed = tokens = batches = 0.0
    with torch.no_grad(), autocast:
        for i in range(0, len(examples), 8):
            r = batch_loss(model, hush, examples[i : i + 8], by_example, features, edge_tokens=edge_tokens)
            ce += r.ce * r.tokens
            tokens += r.tokens
            end += r.end
            edge += r.edge
            batches += 1
            clean += r.clean
            timed += r.sequences
    out = {
        "ce": ce / max(1.0, tokens),
        "end": end / max(1.0, batches),
        "edge": edge / max(1.0, batches),
        "clean_stop": clean / max(1.0, timed),
    }
    out["objective"] = out["ce"] + end_weight * out["end"] + edge_weight * out["edge"]
    return out


@torch.no_grad()
def greedy_check(
    model: Whisper, hush: torch.Tensor | None, seqs: list[Sequence], features: list[torch.Tensor], eot: int
) -> dict[str, float]:
    """Greedy decoding (plain argmax) against the padded path's transcript (CTranslate2's, int8,
    with its suppression rules)."""
    exact = ended = 0
    extra = 0
    for s in seqs:
        encoded = model.encode(encoder_input(features[s.example], hush)[None])
        target = s.tokens[s.prefix_len :]
        tokens, _ = model.greedy(s.tokens[: s.prefix_len], encoded, eot, max_new=len(target) + 15)
        exact += tokens == target
        ended += bool(tokens) and tokens[-1] == eot
        extra += max(0, len(tokens) - len(target))
    n = max(1, len(seqs))
    return {"exact": exact / n, "ended": ended / n, "extra_tokens": extra / n}


def buckets(
    examples: list[int], features: list[torch.Tensor], size: int, rng: random.Random
) -> list[list[int]]:
    """Batches of examples of similar length (less padding), in random order."""
    ordered = sorted(examples, key=lambda e: (features[e].shape[-1], rng.random()))
    batches = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    rng.shuffle(batches)
    return batches


def warmup_cosine(warmup: int, steps: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packs", type=Path, nargs="+", required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--ref", type=Path)
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 100])
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=8, help="examples per step (each with its sequences)")
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--init", type=Path, help="start from this hush (.npy) instead of zeros")
    parser.add_argument("--soft", type=float, default=0.0, help="weight of the teacher distribution term")
    parser.add_argument(
        "--teacher", type=Path, help="keep the teacher here (.pt), and reuse it when it is there"
    )
    parser.add_argument("--end-weight", type=float, default=2.0, help="weight of the end-of-text terms")
    parser.add_argument("--edge-weight", type=float, default=0.0, help="weight of the last text tokens' term")
    parser.add_argument("--edge-tokens", type=int, default=4, help="text tokens at the end of each target")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--greedy", type=int, default=0, help="validation sequences decoded greedily")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 for the training steps")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="use only this many examples (smoke test)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    model = Whisper(load_packs(args.packs), str(device))
    if args.ref:
        torch.backends.cuda.matmul.allow_tf32 = False
        verify(model, args.ref)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    def autocast() -> contextlib.AbstractContextManager:
        if not args.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    examples, arrays = load_data(args.data)
    if args.limit:
        examples, arrays = examples[: args.limit], arrays[: args.limit]
    features = [torch.tensor(a, device=device) for a in arrays]
    by_example = {
        i: [Sequence(i, [*q["prefix"], *q["target"]], len(q["prefix"]), q["ts"]) for q in e["sequences"]]
        for i, e in enumerate(examples)
    }
    eot = examples[0]["sequences"][0]["target"][-1]
    train, val = split_by_clip(examples, args.val_fraction, args.seed)
    print(
        f"{len(examples)} examples ({sum(len(v) for v in by_example.values())} sequences): "
        f"{len(train)} train, {len(val)} val",
        flush=True,
    )
    if args.soft > 0:
        started = time.time()
        if args.teacher and args.teacher.exists():
            load_teacher(args.teacher, by_example, device)
        else:
            build_teacher(model, by_example, features)
            if args.teacher:
                save_teacher(args.teacher, by_example)
        print(f"teacher: {time.time() - started:.1f} s", flush=True)
    rng = random.Random(args.seed)
    val_seqs = [s for e in val for s in by_example[e]]
    val_check = rng.sample(val_seqs, min(len(val_seqs), args.greedy))

    def check(hush: torch.Tensor | None) -> dict[str, float]:
        return validate(
            model,
            hush,
            val,
            by_example,
            features,
            autocast(),
            args.end_weight,
            args.edge_weight,
            args.edge_tokens,
        )

    results: dict[str, dict] = {"truncated": check(None)}
    if val_check:
        results["truncated"].update(greedy_check(model, None, val_check, features, eot))
    print("truncated (no hush):", results["truncated"], flush=True)

    for length in args.lengths:
        started = time.time()
        if args.init:
            hush = torch.tensor(np.load(args.init).astype(np.float32), device=device)[:, :length]
            hush = F.pad(hush, (0, length - hush.shape[1])).requires_grad_(True)
        else:
            hush = torch.zeros(80, length, device=device, requires_grad=True)
        zeros = check(hush)
        print(f"N={length}: {'initial' if args.init else 'zeros as the'} hush: {zeros}", flush=True)
        optimizer = torch.optim.Adam([hush], lr=args.lr)
        steps = max(1, int(args.epochs * len(train) / args.batch))
        warmup = max(1, steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, steps))
        step = 0
        best = (zeros, hush.detach().clone())
        while step < steps:
            for batch in buckets(train, features, args.batch, rng):
                if step >= steps:
                    break
                with autocast():
                    result = batch_loss(
                        model,
                        hush,
                        batch,
                        by_example,
                        features,
                        args.soft,
                        args.end_weight,
                        args.edge_weight,
                        args.edge_tokens,
                    )
                optimizer.zero_grad()
                result.loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                if step % args.eval_every == 0 or step == steps:
                    scores = check(hush)
                    if scores["objective"] < best[0]["objective"]:
                        best = (scores, hush.detach().clone())
                    print(
                        f"N={length} step {step}/{steps} ({time.time() - started:.0f} s): "
                        f"loss {result.loss.item():.4f}, val CE {scores['ce']:.4f} end {scores['end']:.4f} "
                        f"edge {scores['edge']:.4f} "
                        f"clean stop {scores['clean_stop']:.1%}, |H| mean {hush.abs().mean().item():.3f} "
                        f"range [{hush.min().item():.2f}, {hush.max().item():.2f}]",
                        flush=True,
                    )
                    np.save(args.out / f"hush-base-{length}.npy", best[1].cpu().numpy().astype(np.float16))
        results[f"hush{length}"] = {**best[0], "zeros": zeros, "seconds": time.time() - started}
        if val_check:
            results[f"hush{length}"].update(greedy_check(model, best[1], val_check, features, eot))
        print(f"N={length}:", results[f"hush{length}"], flush=True)
        np.save(args.out / f"hush-base-{length}.npy", best[1].cpu().numpy().astype(np.float16))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
