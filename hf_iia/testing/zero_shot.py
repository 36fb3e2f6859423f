"""Tiny random-weight zero-shot models (CLIP, MetaCLIP 2, AltCLIP, Chinese-CLIP, CLIPSeg, SigLIP, SigLIP2) saved as
Hub folders, with tokenizers built offline.

Each folder holds what ``transformers.pipeline("zero-shot-image-classification", model=folder)`` loads: the
``AutoModelForZeroShotImageClassification`` model (safetensors), its image processor and a tokenizer. The vision
tower is the zoo's CLIP tower (SigLIP2: the zoo's NaFlex tower and processor; :data:`hf_iia.testing.TINY_OVERRIDES`);
the text tower reads 64 positions, as the pipeline pads SigLIP prompts to 64 tokens. The CLIP-text types (CLIP,
MetaCLIP 2, CLIPSeg) get a real ``CLIPTokenizer`` over a character vocabulary (no merges). SigLIP's ``SiglipTokenizer`` needs sentencepiece, which is
not installed here, and AltCLIP's (XLM-R) and Chinese-CLIP's (BERT) text towers read their first token: they get a
``tokenizers`` WordLevel tokenizer (``AutoTokenizer`` loads any tokenizer the folder names; the pipeline pads and
truncates it as it would the type's own).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForZeroShotImageClassification, CLIPTokenizer, PreTrainedTokenizerFast

from .zoo import TINY_OVERRIDES, tiny_processor

ZERO_SHOT_KINDS = ("clip", "metaclip_2", "altclip", "chinese_clip", "clipseg", "siglip", "siglip2")
"""The zero-shot types built here."""

IMAGE_SIZE = 32
WORDS = ("this", "is", "a", "an", "photo", "of", "cat", "dog", "bird", "car", "red", "blue", ".")
"""The WordLevel vocabulary of the SigLIP tokenizer (with ``<pad>``, ``<unk>``, ``</s>`` first)."""


def clip_tokenizer() -> CLIPTokenizer:
    """A ``CLIPTokenizer`` whose vocabulary is the lowercase letters and ``.`` (each also as a word end)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in string.ascii_lowercase + ".":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over :data:`WORDS` that ends each prompt with ``</s>`` and returns ``input_ids`` only
    (SiglipTokenizer's inputs)."""
    vocab = {word: index for index, word in enumerate(("<pad>", "<unk>", "</s>", *WORDS))}
    # A text tower that reads the first token attends from it to every word: the labels still differ there.
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="</s>",
        model_input_names=["input_ids"],
    )


def build_zero_shot(kind: str, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(model, image processor, tokenizer)`` of a tiny random ``kind`` (:data:`ZERO_SHOT_KINDS`), eval mode."""
    clip_text = kind in ("clip", "metaclip_2", "clipseg")
    tokenizer = clip_tokenizer() if clip_text else word_tokenizer()
    text = dict(TINY_OVERRIDES["clip"]["text_config"], vocab_size=64, max_position_embeddings=64)
    if clip_text:  # CLIP text towers pool the first end-of-text token
        text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    else:
        text.update(pad_token_id=0, eos_token_id=2)
    if kind == "altclip":
        text.update(project_dim=16)
    vision = TINY_OVERRIDES["siglip2" if kind == "siglip2" else "clip"]["vision_config"]
    kwargs: dict[str, Any] = {"vision_config": vision, "text_config": text}
    if kind not in ("siglip", "siglip2"):
        kwargs["projection_dim"] = 16
    config = AutoConfig.for_model(kind, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForZeroShotImageClassification.from_config(config).eval()
    if kind in ("siglip", "siglip2"):
        with torch.no_grad():  # SigLIP initialises its logit bias to 0 and scale to 0: make both count
            model.logit_scale.fill_(1.5)
            model.logit_bias.fill_(-1.0)
    # SigLIP2's NaFlex processor has no size: it cuts each image into the zoo's patch budget
    return model, tiny_processor(kind, IMAGE_SIZE), tokenizer


def save_zero_shot(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """``save_pretrained`` :func:`build_zero_shot`'s model (safetensors), image processor and tokenizer into
    ``folder``: a Hub folder the zero-shot pipeline and ``IIAExplainer(folder, candidate_labels=...)`` load."""
    folder = Path(folder)
    model, processor, tokenizer = build_zero_shot(kind, seed)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
