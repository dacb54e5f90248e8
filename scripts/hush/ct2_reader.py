"""Read a CTranslate2 ``model.bin`` into numpy arrays.

The layout is the one ``ctranslate2.specs.model_spec.ModelSpec._serialize`` writes (binary
version 6): version, spec name, revision, then each variable as name, rank, shape, dtype id,
byte count and raw bytes, then the aliases (name -> variable name).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def _read(stream: BinaryIO, fmt: str) -> int:
    size = struct.calcsize(fmt)
    return struct.unpack(fmt, stream.read(size))[0]


def _read_string(stream: BinaryIO) -> str:
    length = _read(stream, "H")
    return stream.read(length)[:-1].decode("utf-8")


def read_model(path: Path) -> tuple[str, int, dict[str, np.ndarray]]:
    """Spec name, revision and every variable (aliases resolved to the same array)."""
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as stream:
        version = _read(stream, "I")
        if version != 6:
            raise ValueError(f"unsupported CTranslate2 binary version {version}")
        name = _read_string(stream)
        revision = _read(stream, "I")
        for _ in range(_read(stream, "I")):
            var_name = _read_string(stream)
            rank = _read(stream, "B")
            shape = tuple(_read(stream, "I") for _ in range(rank))
            dtype = DTYPES[_read(stream, "B")]
            num_bytes = _read(stream, "I")
            raw = stream.read(num_bytes)
            if dtype == "bfloat16":
                bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
                array = bits.view(np.float32)
            else:
                array = np.frombuffer(raw, dtype=dtype)
            variables[var_name] = array.reshape(shape)
        for _ in range(_read(stream, "I")):
            alias = _read_string(stream)
            variables[alias] = variables[_read_string(stream)]
    return name, revision, variables


if __name__ == "__main__":
    import sys

    spec, rev, found = read_model(Path(sys.argv[1]))
    print(spec, rev, len(found))
    for key, value in found.items():
        print(key, value.shape, value.dtype)
