"""The text side (rewardedit_lib.text) and the toy text encoder (rewardedit_lib.toy.text_encoder): an offline
tokenizer over the toy world's words and a tiny CLIP text encoder."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, CLIPTextModel

from rewardedit_lib import text, toyworld
from rewardedit_lib.formats import PERFECT_FEEDBACK, Rewards
from rewardedit_lib.toy import text_encoder as toy_text


@pytest.fixture(scope="module")
def toy():
    return toy_text.toy_text_encoder(seed=0)


def test_the_vocabulary_is_deterministic_and_covers_the_toy_world(toy):
    tokenizer, _ = toy
    assert toy_text.toy_vocabulary() == toy_text.toy_vocabulary()
    vocab = toy_text.toy_vocabulary()
    assert vocab[:2] == [toy_text.PAD, toy_text.UNK] and vocab[-2:] == [toy_text.BOS, toy_text.EOS]
    assert len(set(vocab)) == len(vocab)
    texts = [Rewards.perfect().text, "Instruction Following: 1; The red square was not removed.",
             "Detail Preserving: 3; The blue circle moved to the top left.", "The image is blurry and noisy."]
    for i in range(60):
        t = toyworld.make_triplet(0, i)
        texts += [t.instruction, toyworld.caption(t.source_scene), toyworld.caption(t.ideal_scene)]
    for s in texts:
        assert text.unknown_words(tokenizer, s) == [], s
    assert text.unknown_words(tokenizer, "a zebra") == ["zebra"]


def test_tokenizer_adds_bos_eos_pads_to_clip_length_and_round_trips(toy, tmp_path):
    tokenizer, _ = toy
    ids = text.tokenize(tokenizer, ["Make the RED square blue.", ""])
    assert ids.shape == (2, text.MAX_LENGTH)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    words = tokenizer.convert_tokens_to_ids(["make", "the", "red", "square", "blue", "."])
    assert ids[0, :8].tolist() == [bos, *words, eos]
    assert ids[0, 8:].eq(pad).all() and ids[1, :2].tolist() == [bos, eos]
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == "make the red square blue ."
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    back = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert back.model_max_length == text.MAX_LENGTH and back.get_vocab() == tokenizer.get_vocab()
    assert torch.equal(text.tokenize(back, ["Make the RED square blue.", ""]), ids)


def test_long_texts_are_cut_with_a_warning_keeping_the_end_of_text_token(toy):
    tokenizer, _ = toy
    with pytest.warns(UserWarning, match="truncated"):
        ids = text.tokenize(tokenizer, "red " * 200)
    assert ids.shape == (1, text.MAX_LENGTH) and ids[0, -1] == tokenizer.eos_token_id


def test_the_perfect_feedback_fits_and_the_eos_is_the_largest_id_never_2(toy):
    tokenizer, encoder = toy
    assert len(tokenizer(Rewards.perfect().text).input_ids) < text.MAX_LENGTH
    assert encoder.config.eos_token_id == tokenizer.eos_token_id == len(tokenizer) - 1 != 2
    assert encoder.config.hidden_size == 64 and encoder.config.max_position_embeddings == text.MAX_LENGTH
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training


def test_encode_text_gives_hidden_states_and_the_pooled_state_at_the_end_of_text(toy):
    tokenizer, encoder = toy
    hidden, pooled = text.encode_text(tokenizer, encoder, ["remove the red square", PERFECT_FEEDBACK])
    assert hidden.shape == (2, text.MAX_LENGTH, 64) and pooled.shape == (2, 64)
    ids = text.tokenize(tokenizer, ["remove the red square", PERFECT_FEEDBACK])
    eos_at = (ids == tokenizer.eos_token_id).int().argmax(-1)
    assert torch.equal(pooled, hidden[torch.arange(2), eos_at])
    # CLIP's attention is causal: whatever follows the end-of-text token does not change the pooled vector
    # (nor the states before it), but the tokens before it do.
    with torch.no_grad():
        changed = ids.clone()
        changed[:, -3:] = tokenizer.convert_tokens_to_ids("blue")
        out = encoder(changed)
        assert torch.allclose(out.pooler_output, pooled, atol=1e-6)
        assert not torch.allclose(out.last_hidden_state[:, -1], hidden[:, -1])
        before = ids.clone()
        before[0, 2] = tokenizer.convert_tokens_to_ids("blue")
        assert not torch.allclose(encoder(before).pooler_output[0], pooled[0])


def test_the_legacy_argmax_pooling_agrees(toy):
    """Many SD checkpoints carry eos_token_id=2, where CLIP pools at argmax(ids): the toy eos is the largest id."""
    tokenizer, encoder = toy
    ids = text.tokenize(tokenizer, ["paint the background gray", ""])
    legacy = CLIPTextModel(encoder.config.__class__(**{**encoder.config.to_dict(), "eos_token_id": 2}))
    legacy.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        assert torch.allclose(legacy.eval()(ids).pooler_output, encoder(ids).pooler_output, atol=1e-6)


def test_text_encoder_save_and_load_round_trip(toy, tmp_path):
    tokenizer, encoder = toy
    encoder.save_pretrained(tmp_path / "text_encoder")
    back = CLIPTextModel.from_pretrained(tmp_path / "text_encoder").eval()
    a = text.encode_text(tokenizer, encoder, ["make the image darker"])
    b = text.encode_text(tokenizer, back, ["make the image darker"])
    assert torch.equal(a.hidden_states, b.hidden_states) and torch.equal(a.pooled, b.pooled)


def test_the_seed_decides_the_weights():
    a, b, c = (toy_text.toy_text_encoder(seed=s)[1] for s in (0, 0, 1))
    w = lambda m: m.text_model.embeddings.token_embedding.weight if hasattr(m, "text_model") \
        else m.embeddings.token_embedding.weight  # noqa: E731
    assert torch.equal(w(a), w(b)) and not torch.equal(w(a), w(c))


def test_the_old_import_path_still_gives_the_toy_encoder():
    """The model builder calls ``text.toy_text_encoder``: the generic module still answers it (the same function)."""
    assert text.toy_text_encoder is toy_text.toy_text_encoder
