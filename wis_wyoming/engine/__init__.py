"""The inference engine: models, audio, ASR. Knows nothing of transports."""
