"""Transports: how clients reach the engine (Wyoming now; HTTP and WebRTC later)."""
