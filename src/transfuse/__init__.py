"""transfuse: move knowledge between PyTorch / Hugging Face models (distill, merge, fuse)."""
from __future__ import annotations

from .errors import TransfuseError

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `import transfuse` stays light (no torch: a fused merge never needs it);
    # both subpackages are callable (see _callable.py).
    import importlib

    if name in ("distill", "merge", "federate", "online"):
        return importlib.import_module(f".{name}", __name__)
    if name in ("fused_generate", "FusedModel", "fused_logprobs"):
        return getattr(importlib.import_module(".fusion.generate", __name__), name)
    if name in ("fuse_classifiers", "knowledge_cards"):  # `transfuse fuse` mode: classifiers / cards, run(config) -> report
        return importlib.import_module(f".fusion.modes.{'classifiers' if name == 'fuse_classifiers' else 'cards'}", __name__).run
    if name == "extract_lora":
        return importlib.import_module(".merge.extract_lora", __name__).extract_lora
    if name == "build_moe":
        return importlib.import_module(".merge.moe", __name__).build_moe
    if name == "EnsembleTeacher":
        return importlib.import_module(".teachers", __name__).EnsembleTeacher
    if name in ("Batch", "Outputs"):
        return getattr(importlib.import_module(".signals", __name__), name)
    raise AttributeError(name)


__all__ = ["Batch", "EnsembleTeacher", "build_moe", "FusedModel", "Outputs", "TransfuseError", "distill", "extract_lora", "federate", "fuse_classifiers", "fused_generate", "fused_logprobs", "knowledge_cards", "merge", "online", "__version__"]
