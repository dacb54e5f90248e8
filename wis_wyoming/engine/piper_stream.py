"""A Piper voice run in two parts, so a sentence's first audio is ready before the rest is made.

A Piper voice is one VITS graph: the text encoder, duration predictor and flow (the *prelude*,
whole-sentence but cheap), then the HiFi-GAN decoder, which makes every sample and costs most
(measured on 2 cores for a 3.3 s sentence: prelude 66 ms, decoder 108 ms). The graph is cut at
the decoder's input once, when the voice loads. The decoder is convolutional, so decoding the
latent frames in chunks with CONTEXT_FRAMES of overlap on each side gives the samples of
decoding them at once (measured: over 120 dB SNR with 16 frames), and the first chunk plays
while the rest is decoded. A graph that cannot be cut (not a VITS export) runs whole, as Piper
runs it.

Loudness: Piper scales each sentence to peak 1.0, which needs the whole sentence before the
first sample, and makes loudness jump between sentences (speech's peak-to-RMS ratio varies
from 5 to 12 here). Instead each voice gets one gain, measured when it loads on
CALIBRATION_TEXT to bring speech to TARGET_RMS, with a soft limit near full scale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .hardware import ComputePlan

_LOGGER = logging.getLogger(__name__)

CONTEXT_FRAMES = 16  # decoder frames either side of a chunk: enough for identical samples
CHUNK_FRAMES = (16, 112, 384)  # the first small for first audio; each next decodes in far less than
# the audio before it plays (the decoder runs at about 30x real time on 2 cores)
MIN_LAST_FRAMES = 32  # a short remainder joins the chunk before it (trailing silence is trimmed whole)
CALIBRATION_TEXT = "This is how my voice sounds. I can tell you the time, or turn on the lights."
TARGET_RMS = 0.1  # -20 dBFS, usual for speech
GAIN_RANGE = (0.5, 4.0)
LIMIT_KNEE = 0.8


@dataclass(frozen=True)
class Latent:
    """One phoneme sentence's decoder inputs (or, uncut, its whole audio)."""

    inputs: dict[str, np.ndarray]
    frames: int
    audio: np.ndarray | None = None  # float samples, when the graph runs whole


@dataclass(frozen=True)
class _Cut:
    prelude: bytes
    decoder: bytes
    latent: str  # the decoder's time-varying input, cut in chunks
    decoder_inputs: tuple[str, ...]  # all the decoder's inputs, latent included


def chunk_bounds(frames: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges: small first, larger after, no short last one."""
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < frames:
        size = CHUNK_FRAMES[min(len(bounds), len(CHUNK_FRAMES) - 1)]
        end = min(frames, start + size)
        if frames - end < MIN_LAST_FRAMES:
            end = frames
        bounds.append((start, end))
        start = end
    return bounds


def soft_limit(audio: np.ndarray) -> np.ndarray:
    """Unchanged below LIMIT_KNEE, then bent smoothly so it never reaches full scale."""
    size = np.abs(audio)
    over = size > LIMIT_KNEE
    if not over.any():
        return audio
    headroom = 1.0 - LIMIT_KNEE
    bent = LIMIT_KNEE + headroom * np.tanh((size - LIMIT_KNEE) / headroom)
    return np.where(over, np.sign(audio) * bent, audio).astype(np.float32)


def _cut_at_decoder(model_path: Path) -> _Cut | None:
    """The voice's graph as prelude + decoder, or None when it has no VITS decoder to cut at."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(model_path))
    graph = model.graph
    starts = [node for node in graph.node if node.op_type == "Conv" and "dec/conv_pre" in node.name]
    if len(starts) != 1:
        return None
    latent = starts[0].input[0]
    decoder_nodes = _downstream(graph, latent)
    output = graph.output[0].name
    if not any(output in node.output for node in decoder_nodes):
        return None
    produced = {name for node in decoder_nodes for name in node.output}
    constants = {init.name for init in graph.initializer}
    needed = {name for node in decoder_nodes for name in node.input if name}
    decoder_inputs = sorted(needed - produced - constants)
    graph_inputs = {tensor.name for tensor in graph.input}
    made_by_prelude = [name for name in decoder_inputs if name not in graph_inputs]
    extractor = Extractor(model)
    prelude = extractor.extract_model([tensor.name for tensor in graph.input], made_by_prelude)
    decoder = extractor.extract_model(decoder_inputs, [output])
    return _Cut(prelude.SerializeToString(), decoder.SerializeToString(), latent, tuple(decoder_inputs))


def _downstream(graph, tensor: str) -> list:
    """The nodes that depend on `tensor`, in graph order."""
    reached = {tensor}
    nodes = []
    for node in graph.node:  # ONNX graphs are topologically sorted
        if any(name in reached for name in node.input):
            nodes.append(node)
            reached.update(node.output)
    return nodes


class SplitPiper:
    """A loaded Piper voice: phonemes, prelude, and the decoder run chunk by chunk."""

    def __init__(self, model_path: Path, config: dict, plan: ComputePlan) -> None:
        import onnxruntime
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = plan.cpu_threads
        options.inter_op_num_threads = 1
        # Two sessions run in turn: a pool spinning after its run would take the cores from the other.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list = ["CPUExecutionProvider"]
        if plan.device == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": plan.device_index}))

        def session(model: bytes | str):
            return onnxruntime.InferenceSession(model, sess_options=options, providers=providers)

        try:
            cut = _cut_at_decoder(model_path)
        except Exception:  # an odd graph still speaks, uncut
            _LOGGER.warning("Cannot cut %s at its decoder; it runs whole", model_path.name, exc_info=True)
            cut = None
        self.cut = cut
        self.prelude = session(cut.prelude if cut else str(model_path))
        self.decoder = session(cut.decoder) if cut else None
        self.config = PiperConfig.from_dict(config)
        self.phonemes = PiperVoice(session=self.prelude, config=self.config)
        self.hop = self.config.hop_length
        self.gain = 1.0
        self.gain = self._calibrated_gain()

    def latents(
        self,
        text: str,
        speaker_id: int | None,
        length_scale: float | None,
        noise_scale: float | None,
        noise_w_scale: float | None,
    ) -> list[Latent]:
        """The prelude of each sentence espeak finds in `text`."""
        config = self.config
        scales = np.array(
            [
                config.noise_scale if noise_scale is None else noise_scale,
                config.length_scale if length_scale is None else length_scale,
                config.noise_w_scale if noise_w_scale is None else noise_w_scale,
            ],
            dtype=np.float32,
        )
        latents = []
        for phonemes in self.phonemes.phonemize(text):
            if not phonemes:
                continue
            ids = self.phonemes.phonemes_to_ids(phonemes)
            args = {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": scales,
            }
            if config.num_speakers > 1:
                sid = config.default_speaker_id if speaker_id is None else speaker_id
                args["sid"] = np.array([sid], dtype=np.int64)
            latents.append(self._prelude(args))
        return latents

    def decode(self, latent: Latent, start: int, end: int) -> bytes:
        """16-bit samples of frames [start, end)."""
        if latent.audio is not None:
            audio = latent.audio[start * self.hop : end * self.hop]
        else:
            assert self.cut is not None and self.decoder is not None
            low, high = max(0, start - CONTEXT_FRAMES), min(latent.frames, end + CONTEXT_FRAMES)
            inputs = dict(latent.inputs)
            inputs[self.cut.latent] = latent.inputs[self.cut.latent][..., low:high]
            decoded = self.decoder.run(None, inputs)[0].reshape(-1)
            offset = (start - low) * self.hop
            audio = decoded[offset : offset + (end - start) * self.hop]
        limited = soft_limit(audio * self.gain)
        return (np.clip(limited, -1.0, 1.0) * 32767).astype(np.int16).tobytes()

    def _prelude(self, args: dict[str, np.ndarray]) -> Latent:
        if self.cut is None:
            audio = self.prelude.run(None, args)[0].reshape(-1)
            return Latent({}, -(-len(audio) // self.hop), audio)
        wanted = [name for name in self.cut.decoder_inputs if name not in args]
        inputs = dict(zip(wanted, self.prelude.run(wanted, args), strict=True))
        inputs.update({name: args[name] for name in self.cut.decoder_inputs if name in args})
        return Latent(inputs, int(inputs[self.cut.latent].shape[-1]))

    def _calibrated_gain(self) -> float:
        """The gain that brings CALIBRATION_TEXT to TARGET_RMS (also warms the sessions up)."""
        samples = [
            np.frombuffer(self.decode(latent, 0, latent.frames), dtype=np.int16)
            for latent in self.latents(CALIBRATION_TEXT, None, None, None, None)
        ]
        if not samples:
            return 1.0
        audio = np.concatenate(samples).astype(np.float32) / 32767
        rms = float(np.sqrt(np.mean(audio**2)))
        if rms <= 1e-6:
            return 1.0
        return float(np.clip(TARGET_RMS / rms, *GAIN_RANGE))
