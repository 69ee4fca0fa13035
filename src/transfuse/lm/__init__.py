"""Causal language models: loading, data, memory-bounded losses, generation for sequence-level KD.

Token convention: a batch's ``inputs`` (B, T) are token ids; the logits at position t predict
token t + 1, so ``labels`` (B, T) hold the next token (-100 where not counted) and ``mask`` (B, T)
marks the logit positions whose next token counts (response tokens of chat data, all real
tokens of plain text).
"""
