"""Synthesised speech on disk, so a sentence said before comes back in milliseconds.

WIS kept its TTS in a 10 GB nginx cache; here each sentence's audio is one file named by a hash
of everything that shapes it (text, voice and its files' revision, speaker, scales). The cache
has a size bound: the least recently used entries go first (a hit touches its file, so the order
survives restarts). Each file carries a checksum: a torn or corrupt entry is ignored, deleted and
synthesised again, never played.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import tempfile
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LOGGER = logging.getLogger(__name__)

MAGIC = b"WISTTS1\0"
_HEADER = struct.Struct("<8sIIQ")  # magic, sample rate, crc32 of the samples, sample bytes
SUFFIX = ".pcm"


@dataclass(frozen=True)
class CachedAudio:
    rate: int
    pcm: bytes  # 16-bit mono samples


def cache_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class TtsCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, int] = OrderedDict()  # key -> size, least recent first
        self._bytes = 0
        directory.mkdir(parents=True, exist_ok=True)
        found = []
        for entry in os.scandir(directory):
            if entry.name.endswith(SUFFIX) and entry.is_file():
                stat = entry.stat()
                found.append((stat.st_mtime_ns, entry.name[: -len(SUFFIX)], stat.st_size))
            elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
                Path(entry.path).unlink(missing_ok=True)  # a write cut short by a crash
        for _, key, size in sorted(found):
            self._entries[key] = size
            self._bytes += size
        self._evict()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedAudio | None:
        path = self._path(key)
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
        try:
            data = path.read_bytes()
            os.utime(path)  # least recently used order, across restarts
        except OSError:
            self._forget(key)
            return None
        audio = _parse(data)
        if audio is None:
            _LOGGER.warning("TTS cache entry %s is corrupt; it is dropped and synthesised again", key[:12])
            self._forget(key)
            path.unlink(missing_ok=True)
        return audio

    def put(self, key: str, audio: CachedAudio) -> None:
        if len(audio.pcm) + _HEADER.size > self.max_bytes:
            return
        data = _HEADER.pack(MAGIC, audio.rate, zlib.crc32(audio.pcm), len(audio.pcm)) + audio.pcm
        temporary: str | None = None
        try:
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, self._path(key))
        except OSError as err:
            _LOGGER.warning("Cannot write to the TTS cache: %s", err)
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            return
        with self._lock:
            self._bytes += len(data) - self._entries.pop(key, 0)
            self._entries[key] = len(data)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            keys = list(self._entries)
        for key in keys:
            self._forget(key)
            self._path(key).unlink(missing_ok=True)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._bytes -= self._entries.pop(key, 0)

    def _evict(self) -> None:
        """Drop least recently used entries until the cache fits (called with the lock held)."""
        while self._bytes > self.max_bytes and self._entries:
            key, size = self._entries.popitem(last=False)
            self._bytes -= size
            self._path(key).unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"


def _parse(data: bytes) -> CachedAudio | None:
    if len(data) < _HEADER.size:
        return None
    magic, rate, checksum, length = _HEADER.unpack_from(data)
    pcm = data[_HEADER.size :]
    if magic != MAGIC or length != len(pcm) or zlib.crc32(pcm) != checksum or not 1000 <= rate <= 192000:
        return None
    return CachedAudio(rate, pcm)
