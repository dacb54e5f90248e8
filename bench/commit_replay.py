"""Streaming commit latency and long-form WER, replayed on a virtual clock.

bench/commit_latency.py streams over Wyoming in real time, and a run's figures move with the
timing of its passes: test-other's streamed WER moved by two points between runs of the same
code, more than most changes of the commit policy move it. Here a `TranscriptStream` is driven
directly on a virtual clock (see virtual_time): the audio arrives in the chunks the Wyoming bench
sends, at the moments it sends them, and each pass is charged the time a cost model gives it
(fitted to passes measured on the machine modelled; see `--costs`). A replay is deterministic, so
two policies are compared on the same audio and the same pass timings, and it takes only the
passes' compute: several files replay side by side (`--jobs`) without slowing one another's
clocks.

    .venv/bin/python bench/commit_replay.py --seeds 0 1 2 --set pass_seconds=0.4 --set EDGE_HOLD=0.4

A replay gives the same commits at the same moments every time, however loaded the machine (base,
seed 0: the same with one file replayed alone as with three side by side). But a change to the
policy moves the passes that follow it, and with them the words they agree on, much as a real
run's jitter does: `--seeds` replays every file once per seed with pass times jittered (seed 0:
none), for figures pooled over as many runs.

`--set NAME=VALUE` overrides a `StreamingPolicy` field or a constant of engine/streaming.py.
`--measure` charges each pass its real time instead (run nothing else meanwhile); with `--fit
FILE` it writes the cost model fitted to the passes measured. The figures are those of
bench/commit_latency.py: latency from a word's end (forced alignment of the offline transcript)
to the commit that carries it, and WER against the offline transcript of the same model.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import logging
import os
import statistics
import sys
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import virtual_time
from commit_latency import (
    FileRun,
    commit_latencies,
    describe,
    offline_text,
    offline_words,
    pooled,
)
from wyoming_latency import CHUNK_SAMPLES, SPEECH, model_directory

from wis_wyoming.engine import streaming
from wis_wyoming.engine.asr import (
    AsrDefaults,
    AsrEngine,
    Decoded,
    PassKind,
    ResidentModel,
    TranscriptionOptions,
)
from wis_wyoming.engine.audio import WHISPER_RATE, PcmFormat, pcm_to_mono_float
from wis_wyoming.engine.hardware import plan_compute
from wis_wyoming.engine.models import ModelRegistry

COSTS = Path(__file__).resolve().parent / "pass_costs_base_2cpu.json"
# With a seed, each modelled pass time is scaled by up to this much either way: real passes vary
# so from pass to pass, and a stream's figures move with them (see the module's docstring).
JITTER = 0.1
CACHE_DIR = Path(os.environ.get("WIS_CACHE_DIR", Path.home() / ".cache" / "wis_wyoming"))
OFFLINE_CACHE = CACHE_DIR / "bench" / "offline_longform.json"


@dataclass
class PassCost:
    """What one pass cost: the features the cost model takes, and its seconds."""

    kind: str
    word_times: bool
    audio_seconds: float
    tokens: int
    seconds: float

    @property
    def group(self) -> str:
        return f"{self.kind}{'+words' if self.word_times else ''}"


@dataclass
class CostModel:
    """Seconds a pass takes: per kind of pass (and whether its words are aligned), linear in its
    audio's length and in the tokens it decodes (the decoder's steps dominate a draft: about
    9 ms a token for base on one thread of the 2-core VM, against 75 ms for its encoder)."""

    coefficients: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def seconds(self, cost: PassCost) -> float:
        # A kind seldom seen when the model was fitted (a final pass aligned again) costs as
        # the same kind unaligned: alignment is a small part of a pass.
        values = self.coefficients.get(cost.group) or self.coefficients.get(cost.kind)
        if values is None:
            raise SystemExit(f"the cost model has no passes of kind {cost.group!r}: refit it with --measure")
        constant, per_second, per_token = values
        return max(0.0, constant + per_second * cost.audio_seconds + per_token * cost.tokens)

    @classmethod
    def fit(cls, passes: list[PassCost]) -> CostModel:
        model = cls()
        for group in sorted({p.group for p in passes}):
            mine = [p for p in passes if p.group == group]
            features = np.array([[1.0, p.audio_seconds, p.tokens] for p in mine])
            seconds = np.array([p.seconds for p in mine])
            if len(mine) < 6:  # too few to fit a slope: charge the mean
                model.coefficients[group] = (float(seconds.mean()), 0.0, 0.0)
                continue
            solution = np.linalg.lstsq(features, seconds, rcond=None)[0]
            model.coefficients[group] = tuple(float(x) for x in solution)  # type: ignore[assignment]
        return model

    @classmethod
    def load(cls, path: Path) -> CostModel:
        data = json.loads(path.read_text())
        return cls({group: tuple(values) for group, values in data["coefficients"].items()})

    def save(self, path: Path, note: str) -> None:
        path.write_text(json.dumps({"note": note, "coefficients": self.coefficients}, indent=1) + "\n")


@dataclass(frozen=True)
class ReplayOptions:
    model_dir: Path
    beam: int
    threads: int  # CTranslate2's, per replay; the clock runs on the cost model whatever they are
    overrides: tuple[str, ...]  # see apply_overrides
    costs: CostModel | None  # None: charge each pass its real time
    seed: int  # 0: the cost model's times; else jittered (see JITTER)
    log_dir: Path | None


@dataclass
class Replay:
    """One file replayed: commits as (virtual seconds since the audio began, text)."""

    name: str
    chunks: list[tuple[float, str]]
    text: str
    final_latency: float
    passes: list[PassCost]
    # Each committed word: (virtual seconds, text, start, end, probability, kind of the pass).
    words: list[tuple[float, str, float, float, float | None, str]]


class VirtualTimeFormatter(logging.Formatter):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.loop.time():8.2f} {super().format(record)}"


def apply_overrides(overrides: list[str]) -> streaming.StreamingPolicy:
    """Set module constants of engine/streaming.py; returns the policy with its fields set."""
    policy = streaming.StreamingPolicy()
    names = {f.name for f in fields(policy)}
    for item in overrides:
        name, _, text = item.partition("=")
        value = ast.literal_eval(text)
        if name in names:
            policy = replace(policy, **{name: value})
        elif name.isupper() and hasattr(streaming, name):
            setattr(streaming, name, value)
        else:
            raise SystemExit(f"--set {item}: not a StreamingPolicy field or a streaming constant")
    return policy


async def replay(wav: Path, options: ReplayOptions) -> Replay:
    """`wav` streamed into a TranscriptStream on the virtual clock, as the Wyoming bench sends it."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, virtual_time.VirtualTimeLoop)
    if options.log_dir is None:
        return await replay_stream(wav, options)
    with pass_log(options.log_dir / f"{wav.stem}.log", loop):
        return await replay_stream(wav, options)


@contextlib.contextmanager
def pass_log(path: Path, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """The stream's account of each pass, stamped with the virtual clock, written to `path` for
    the block only (a worker process replays several files in turn)."""
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(VirtualTimeFormatter(loop))
    streaming_log = logging.getLogger(streaming.__name__)
    streaming_log.addHandler(handler)
    streaming_log.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        streaming_log.removeHandler(handler)
        handler.close()


async def replay_stream(wav: Path, options: ReplayOptions) -> Replay:
    policy = apply_overrides(options.overrides)
    loop = asyncio.get_running_loop()
    registry = ModelRegistry(CACHE_DIR, local_files_only=True)
    name = registry.add_spec(f"bench={options.model_dir}")
    plan = plan_compute("cpu", "int8", options.threads)
    engine = AsrEngine(registry, plan, AsrDefaults(model=name, beam_size=options.beam))
    resident, request = await engine.prepare(TranscriptionOptions(language="en"))
    jitter = np.random.default_rng([options.seed, *wav.name.encode()]) if options.seed else None
    passes = charge_passes(engine, resident.whisper.hf_tokenizer, options.costs, jitter)
    with wave.open(str(wav)) as source:
        pcm_format = PcmFormat(source.getframerate(), source.getsampwidth(), source.getnchannels())
        pcm = source.readframes(source.getnframes())
    assert pcm_format.rate == WHISPER_RATE, "longform files are 16 kHz"
    samples = pcm_to_mono_float(pcm, pcm_format)
    chunks: list[tuple[float, str]] = []

    async def committed(text: str) -> None:
        chunks.append((loop.time(), text))

    stream = streaming.TranscriptStream(engine, resident, request, policy, on_commit=committed)
    words: list[tuple[float, str, float, float, float | None, str]] = []
    commit = stream._commit

    def recording_commit(settled: list) -> str:
        kind = passes[-1].kind if passes else ""
        words.extend((loop.time(), w.text, w.start, w.end, w.probability, kind) for w in settled)
        return commit(settled)

    stream._commit = recording_commit  # type: ignore[method-assign]
    starts = range(0, len(samples), CHUNK_SAMPLES)
    for index, start in enumerate(starts):
        # As bench/wyoming_latency.send_chunks sends them: each chunk as its own time begins.
        await asyncio.sleep(index * CHUNK_SAMPLES / WHISPER_RATE - loop.time())
        stream.push(samples[start : start + CHUNK_SAMPLES])
    await asyncio.sleep(len(starts) * CHUNK_SAMPLES / WHISPER_RATE - loop.time())
    stopped = loop.time()
    result = await stream.finish()
    final_latency = loop.time() - stopped
    await engine.close()
    return Replay(wav.name, chunks, result.text, final_latency, passes, words)


def charge_passes(
    engine: AsrEngine, tokenizer: Any, costs: CostModel | None, jitter: np.random.Generator | None
) -> list[PassCost]:
    """Make each of the engine's passes take virtual time: its real time without `costs`, else
    the cost model's. Returns the list each pass's cost is appended to."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, virtual_time.VirtualTimeLoop)
    passes: list[PassCost] = []
    decode = engine.decode

    async def charged_decode(
        resident: ResidentModel,
        audio: np.ndarray,
        *args: Any,
        kind: PassKind = PassKind.FINAL,
        word_times: bool = False,
        **kwargs: Any,
    ) -> Decoded | None:
        with loop.off_loop():
            decoded = await decode(resident, audio, *args, kind=kind, word_times=word_times, **kwargs)
        if decoded is None:
            return None
        tokens = len(tokenizer.encode(decoded.text, add_special_tokens=False).ids)
        cost = PassCost(kind.value, word_times, len(audio) / WHISPER_RATE, tokens, decoded.inference_seconds)
        if costs is not None:
            cost.seconds = costs.seconds(cost)
            if jitter is not None:
                cost.seconds *= 1.0 + JITTER * jitter.uniform(-1.0, 1.0)
        passes.append(cost)
        await asyncio.sleep(cost.seconds)
        return replace(decoded, inference_seconds=cost.seconds)

    engine.decode = charged_decode  # type: ignore[method-assign]
    return passes


def replay_in_process(wav: Path, options: ReplayOptions) -> Replay:
    return virtual_time.run(replay(wav, options))


def offline_transcripts(model_dir: Path, wavs: list[Path], beam: int, threads: int) -> dict[str, dict]:
    """Per file: the offline transcript, and its words' end times; cached, as they take minutes."""
    cache = json.loads(OFFLINE_CACHE.read_text()) if OFFLINE_CACHE.is_file() else {}
    changed = False
    for wav in wavs:
        key = f"{model_dir.resolve()}|{beam}|{wav.name}"
        if key not in cache:
            _, aligned = offline_words(model_dir, wav, beam, threads)
            cache[key] = {"aligned": aligned, "text": offline_text(model_dir, wav, beam, threads)}
            changed = True
    if changed:
        OFFLINE_CACHE.parent.mkdir(parents=True, exist_ok=True)
        OFFLINE_CACHE.write_text(json.dumps(cache))
    return {wav.name: cache[f"{model_dir.resolve()}|{beam}|{wav.name}"] for wav in wavs}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="base")
    parser.add_argument("--file", action="append", dest="files", help="in longform/ (default: all)")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="per replay; pass times are modelled")
    parser.add_argument("--jobs", type=int, default=3, help="files replayed side by side")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="NAME=VALUE")
    parser.add_argument("--costs", type=Path, default=COSTS)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="a replay of every file per seed (see JITTER)"
    )
    parser.add_argument("--measure", action="store_true", help="charge passes their real time")
    parser.add_argument("--fit", type=Path, help="with --measure: write the fitted cost model here")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--log", type=Path, help="a folder for each file's log of its passes")
    args = parser.parse_args()
    apply_overrides(args.overrides)  # refuse a bad name before minutes of work

    model_dir = Path(args.model) if Path(args.model).is_dir() else model_directory(args.model, CACHE_DIR)
    wavs = (
        [SPEECH / "longform" / name for name in args.files]
        if args.files
        else sorted((SPEECH / "longform").glob("*.wav"))
    )
    offline = offline_transcripts(model_dir, wavs, args.beam, os.cpu_count() or 2)
    if args.log:
        args.log.mkdir(parents=True, exist_ok=True)
    jobs = [
        ReplayOptions(
            model_dir,
            args.beam,
            args.threads,
            tuple(args.overrides),
            None if args.measure else CostModel.load(args.costs),
            seed,
            args.log / f"seed{seed}" if args.log else None,
        )
        for seed in args.seeds
    ]
    for options in jobs:
        if options.log_dir:
            options.log_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Measured pass times are real ones: one replay at a time, with all the threads it asked for.
    with ProcessPoolExecutor(max_workers=1 if args.measure else args.jobs) as pool:
        pairs = [(wav, options) for options in jobs for wav in wavs]
        replays = list(pool.map(replay_in_process, *zip(*pairs, strict=True)))
    timing = "measured" if args.measure else "modelled"
    print(f"model {args.model}, beam {args.beam}; {' '.join(args.overrides) or 'default policy'}")
    print(f"{len(replays)} replays in {time.perf_counter() - started:.0f} s, {timing} pass times")
    runs = []
    for (wav, options), played in zip(pairs, replays, strict=True):
        latencies, committed_words = commit_latencies(played.chunks, offline[wav.name]["aligned"])
        reference = wav.with_suffix(".txt").read_text().strip()
        run = FileRun(
            wav.name, latencies, committed_words, played.final_latency, reference, played.text,
            offline[wav.name]["text"],
        )  # fmt: skip
        runs.append(run)
        print(f"{describe(f'seed {options.seed}, {wav.stem}', run.figures())}; {pass_summary(played)}")
    overall = pooled(runs)
    print(describe(f"all {len(runs)} replays pooled", overall))
    if len(jobs) > 1:
        per_seed = [pooled(runs[i * len(wavs) : (i + 1) * len(wavs)]) for i in range(len(jobs))]
        print("per seed (p50 / p95 / WER difference): " + ", ".join(
            f"{f['commit_p50']:.2f} / {f['commit_p95']:.2f} / {f['wer_difference'] * 100:+.2f}"
            for f in per_seed
        ))  # fmt: skip
    if args.measure and args.fit:
        model = CostModel.fit([cost for played in replays for cost in played.passes])
        model.save(
            args.fit, f"fitted to {args.model}, beam {args.beam}, passes measured with {args.threads} threads"
        )
        print(f"cost model written to {args.fit}: {model.coefficients}")
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(
            json.dumps(
                {
                    "settings": settings,
                    "pooled": overall,
                    "replays": [
                        {
                            "seed": options.seed,
                            "file": run.name,
                            **run.figures(),
                            "commits": played.chunks,
                            "words": played.words,
                        }
                        for (_, options), run, played in zip(pairs, runs, replays, strict=True)
                    ],
                }
            )
        )
    return 0


def pass_summary(played: Replay) -> str:
    """How many passes of each kind, and their mean time."""
    kinds: dict[str, list[float]] = {}
    for cost in played.passes:
        kinds.setdefault(cost.kind, []).append(cost.seconds)
    counts = ", ".join(f"{len(s)} {k} ({statistics.mean(s) * 1000:.0f} ms)" for k, s in sorted(kinds.items()))
    return f"final {played.final_latency * 1000:.0f} ms; passes {counts}"


if __name__ == "__main__":
    raise SystemExit(main())
