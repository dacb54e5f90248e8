"""Errors a client can cause or see; each carries a stable machine-readable code.

Transports map these to their own error shapes (a Wyoming `error` event, an HTTP 4xx JSON body),
so the engine never needs to know which transport a request came from.
"""


class WisError(Exception):
    """Base class: a failure with a message meant for the user."""

    code = "error"


class ConfigError(WisError):
    code = "invalid-config"


class InvalidRequestError(WisError):
    code = "invalid-request"


class UnknownModelError(InvalidRequestError):
    code = "unknown-model"


class InvalidAudioError(InvalidRequestError):
    code = "invalid-audio"


class AudioTooLongError(InvalidRequestError):
    code = "audio-too-long"


class ModelLoadError(WisError):
    code = "model-load-failed"


class OverloadedError(WisError):
    code = "overloaded"
