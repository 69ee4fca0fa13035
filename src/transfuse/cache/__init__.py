"""Offline teacher outputs, computed once, stored as safetensors keyed by sample id, fingerprinted."""
from .logits import CachedTeacher, LogitsCache, build_or_load_logits_cache, model_fingerprint

__all__ = ["CachedTeacher", "LogitsCache", "build_or_load_logits_cache", "model_fingerprint"]
