"""The toy text encoder: an offline tokenizer over the toy world's words and a tiny CLIP text encoder.

Why a module of the toy package: nothing here is needed by the real (``sd15``) model, whose tokenizer and
encoder are CLIP ViT-L/14 loaded with ``from_pretrained``; what the toy model needs instead reads the toy
world's vocabulary tables (:mod:`.world`). The generic text code -- :func:`rewardedit_lib.text.tokenize`
and :func:`rewardedit_lib.text.encode_text`, used for both models -- stays in :mod:`rewardedit_lib.text`.

For ``toy`` nothing is downloaded: the tokenizer is a ``tokenizers`` WordLevel model over the toy world's
words (built deterministically, see :func:`toy_vocabulary`), wrapped as a ``transformers`` fast tokenizer,
and the encoder is a 2-layer ``CLIPTextModel`` of width 64 (the toy UNet's ``cross_attention_dim`` and the
toy reward encoder's ``text_dim``). Both save and load with ``save_pretrained`` / ``from_pretrained`` like
the real ones.

The pooled output (see :mod:`rewardedit_lib.text`): ``CLIPTextModel`` pools at the first position whose id
equals ``config.eos_token_id``, or, when that id is the legacy 2, at the argmax of the ids. The toy
vocabulary satisfies both rules: its config names the real end-of-text id, and that id is also the largest.
"""

from __future__ import annotations

import re

import torch

from ..formats import PERFECT_FEEDBACK, PERSPECTIVE_TITLES
from ..text import MAX_LENGTH
from .world import BACKGROUNDS, OBJECT_COLORS, PATTERNS, REGIONS, SHAPES, SIZES, TONES, grammar_phrases

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"
#: Toy text encoder: width = the toy UNet's cross_attention_dim = the toy reward encoder's text_dim.
TOY_HIDDEN_SIZE = 64
#: Words a feedback sentence is made of beyond the toy world's own vocabulary (colours, shapes, ...).
FEEDBACK_WORDS: tuple[str, ...] = tuple("""
a an the this that these those it its there here is are was were be been being has have had do does did
not no none nothing only instead but and or of to in on at by for from with into onto as than then also
still too very slightly partly partially half fully completely entirely whole other another some all
same different wrong correct right new old original unrelated rest
instruction instructions following followed follow detail details preserving preserved preserve generation
quality image images picture pictures photo object objects shape shapes colour colours color colors
background foreground region part side edge edges area content scene edit edits edited editing change
changes changed unchanged remove removed removal add added addition move moved moves appear appears
appeared disappear disappeared vanish vanished missing gone present visible invisible replace replaced
turn turned became become becomes make made paint painted fill filled cover covered draw drawn drawing
apply applied shift shifted recolor recolored recoloured altered alter kept keep lost lose
noise noisy grain grainy blur blurry blurred soft sharp blocky block blocks pixelated compression artifact
artifacts artefacts distorted distortion low high clean clear clearly noticeable unnoticeable obvious
negative aspects aspect issue issues problem problems failure failed fails
line lines outline outlines sketch pattern patterns striped stripes checkerboard checks tone warm cool
bright dark light
didn doesn isn wasn weren hasn t s
""".split())
_WORD_RE = re.compile(r"[^\W\d_]+|\d|[^\w\s]", re.UNICODE)


def _words(text: str) -> list[str]:
    """Split text the way the toy tokenizer does (lower case; words, single digits, single punctuation)."""
    return _WORD_RE.findall(text.lower())


def toy_vocabulary() -> list[str]:
    """The toy tokenizer's vocabulary, in id order: ``[PAD]``, ``[UNK]``, sorted words, then bos and eos.

    Deterministic: the toy world's vocabulary (colours, backgrounds, shapes, sizes, regions, patterns,
    tones and the words of every instruction template), the perfect-score feedback, the perspective titles,
    the digits, punctuation and :data:`FEEDBACK_WORDS`. The end-of-text token comes last, so it has the
    largest id (CLIP's legacy argmax pooling picks it too).
    """
    words: set[str] = set(FEEDBACK_WORDS)
    sources: list[str] = [PERFECT_FEEDBACK, *PERSPECTIVE_TITLES.values()]
    sources += [*OBJECT_COLORS, *BACKGROUNDS, *SHAPES, *SIZES, *PATTERNS, *TONES, *REGIONS]
    # The instruction grammar's own words (its templates and the phrases of patterns and tones).
    sources += grammar_phrases()
    sources.append("nothing on a off-colour background, drawn as outlines, tone with")  # scene captions
    for s in sources:
        words.update(w for w in _words(re.sub(r"\{\w\}", " ", s)))
    digits = [str(d) for d in range(10)]
    punctuation = list(".,;:!?'\"-()/")
    body = sorted(w for w in words if w not in digits and w not in punctuation)
    return [PAD, UNK, *body, *digits, *punctuation, BOS, EOS]


def toy_tokenizer(max_length: int = MAX_LENGTH):
    """An offline tokenizer for the toy world: lower case, split on whitespace and punctuation, one id per
    word (``[UNK]`` for words outside :func:`toy_vocabulary`), ``<|startoftext|> ... <|endoftext|>`` around
    every text, ``[PAD]`` after. A ``transformers`` fast tokenizer: ``save_pretrained`` / ``from_pretrained``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(toy_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    # Digits split one by one (as in _words): "10" is two tokens, so no number is ever unknown.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation("isolated"),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}",
                                                       special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, model_max_length=max_length)


def toy_text_config(tokenizer, hidden_size: int = TOY_HIDDEN_SIZE, layers: int = 2, heads: int = 4):
    """A ``CLIPTextConfig`` for a tiny CLIP text encoder over ``tokenizer``'s vocabulary."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=tokenizer.model_max_length,
        projection_dim=hidden_size, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # the real id (never the legacy 2): pooling reads it
    )


def toy_text_encoder(seed: int = 0, hidden_size: int = TOY_HIDDEN_SIZE, layers: int = 2, heads: int = 4):
    """``(tokenizer, text_encoder)`` for the toy world: random init from ``seed``, frozen (as CLIP is in the
    paper), in eval mode. ``hidden_size=768, layers=12, heads=12`` gives CLIP ViT-L/14's text shapes over
    the toy vocabulary (random weights; for shapes and timings of the sd15 model without a download)."""
    from transformers import CLIPTextModel

    tokenizer = toy_tokenizer()
    if tokenizer.eos_token_id == 2:
        raise AssertionError("the toy end-of-text id must not be 2 (CLIP's legacy pooling value)")
    torch.manual_seed(seed)
    encoder = CLIPTextModel(toy_text_config(tokenizer, hidden_size, layers, heads))
    return tokenizer, encoder.requires_grad_(False).eval()
