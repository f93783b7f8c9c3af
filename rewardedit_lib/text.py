"""The text side: one encode function for the toy and the real CLIP text encoder.

Why a module: the model reads text twice. The *instruction* goes through the frozen CLIP text encoder and
its per-token hidden states feed the UNet's cross-attention (as in InstructPix2Pix); the *feedback text*
(the three feedbacks joined by "; ") goes through the same encoder and its *pooled* vector feeds the
reward encoder. :func:`encode_text` returns both, so the two uses can never tokenize differently.

For ``sd15`` the encoder is the real CLIP ViT-L/14 (``CLIPTokenizer`` + ``CLIPTextModel`` loaded with
``from_pretrained`` from an InstructPix2Pix folder). For ``toy`` the offline tokenizer and the tiny CLIP
text encoder over the toy world's words live in :mod:`rewardedit_lib.toy.text_encoder`
(:func:`~rewardedit_lib.toy.text_encoder.toy_text_encoder`; this module still answers
``text.toy_text_encoder`` for the code that calls it by its old name).

The pooled output. ``CLIPTextModel`` pools at the end-of-text token: at the first position whose id equals
``config.eos_token_id``, except when that id is 2 -- a legacy value many Stable Diffusion checkpoints
still carry -- where it takes the argmax of the ids (CLIP's ``<|endoftext|>`` has the largest id). The toy
vocabulary satisfies both rules: its config names the real end-of-text id, and that id is also the largest.
Because CLIP's attention is causal, nothing after the end-of-text token (padding) changes the pooled vector.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Sequence

import torch

#: CLIP's context length; the toy encoder uses the same, so toy and sd15 embeddings have the same length.
MAX_LENGTH = 77


class TextEncoding(NamedTuple):
    """What :func:`encode_text` returns (unpacks as ``hidden_states, pooled``)."""

    hidden_states: torch.Tensor  # (B, L, D): per-token states, the UNet's cross-attention context
    pooled: torch.Tensor  # (B, D): the state at the end-of-text token, the reward encoder's text input


def tokenize(tokenizer, texts: str | Sequence[str], max_length: int | None = None) -> torch.Tensor:
    """``(B, L)`` input ids, padded to the tokenizer's ``model_max_length`` (77 for CLIP), as Stable
    Diffusion does: the UNet was trained on fixed-length contexts. Longer texts are cut (with a warning),
    keeping the end-of-text token."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    length = max_length or tokenizer.model_max_length
    ids = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    full = tokenizer(texts, padding=False, truncation=False).input_ids
    cut = [t for t, f in zip(texts, full) if len(f) > length]
    if cut:
        warnings.warn(f"{len(cut)} text(s) longer than {length} tokens were truncated, e.g. {cut[0][:80]!r}",
                      stacklevel=2)
    return ids


def encode_text(tokenizer, text_encoder, texts: str | Sequence[str], device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> TextEncoding:
    """Encode texts with a CLIP text encoder: ``(hidden_states (B, L, D), pooled (B, D))``.

    The same call serves the instruction (``hidden_states`` -> the UNet's cross-attention; ``""`` gives the
    unconditional context of classifier-free guidance, as diffusers' InstructPix2Pix trainer uses) and the
    feedback text (``pooled`` -> the reward encoder). Works for the toy encoder and for the real
    ``CLIPTokenizer`` / ``CLIPTextModel``. Gradients flow only if the encoder's parameters require them.
    """
    device = torch.device(device) if device is not None else text_encoder.device
    ids = tokenize(tokenizer, texts).to(device)
    out = text_encoder(ids)
    hidden, pooled = out.last_hidden_state, out.pooler_output
    if dtype is not None:
        hidden, pooled = hidden.to(dtype), pooled.to(dtype)
    return TextEncoding(hidden, pooled)


def unknown_words(tokenizer, text: str) -> list[str]:
    """The words of ``text`` the tokenizer maps to its unknown token (none, for the toy world's texts)."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [text[a:b] for i, (a, b) in zip(enc.input_ids, enc.offset_mapping) if i == unk]


#: Moved to :mod:`rewardedit_lib.toy.text_encoder`, still found here under their old import path (the model
#: builder calls ``text.toy_text_encoder``). Imported on first use: the toy encoder imports this module.
_MOVED_TO_TOY = ("toy_text_encoder",)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_TOY:
        from .toy import text_encoder

        return getattr(text_encoder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
