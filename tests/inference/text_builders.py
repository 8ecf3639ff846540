"""A text encoder the suite builds itself: a WordPiece tokenizer trained here with `tokenizers`, and a small
network with BERT's three inputs (input_ids, attention_mask, token_type_ids) exported to ONNX."""

from __future__ import annotations

import functools
import hashlib
import io

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from marketplace.models import ModelVersion

from .builders import publish

CORPUS = [
    "the cat sat on the mat",
    "a dog barked at the postman",
    "stock markets fell sharply today",
    "the football team won the final",
    "heavy rain is expected this weekend",
    "she baked bread and ate it warm",
    "interest rates rose again this month",
    "the striker scored twice in the second half",
    "a sunny morning turned into a stormy evening",
    "fresh pasta with tomato sauce and basil",
]
HIDDEN = 16


@functools.cache
def wordpiece_tokenizer_json() -> str:
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP], lower-cased), trained on CORPUS."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.enable_truncation(max_length=32)
    return tokenizer.to_str()


@functools.cache
def tiny_encoder_onnx(*, labels: int = 0) -> bytes:
    """Embeddings (word, position, type) → one masked self-attention layer → `last_hidden_state` [b, s, 16];
    with `labels`, a classification head over the mean-pooled states gives `logits` [b, labels] instead."""
    import torch
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_str(wordpiece_tokenizer_json()).get_vocab_size()
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words = torch.nn.Embedding(vocab, HIDDEN)
            self.positions = torch.nn.Embedding(64, HIDDEN)
            self.types = torch.nn.Embedding(2, HIDDEN)
            self.qkv = torch.nn.Linear(HIDDEN, 3 * HIDDEN)
            self.norm = torch.nn.LayerNorm(HIDDEN)
            self.head = torch.nn.Linear(HIDDEN, labels) if labels else None

        def forward(self, input_ids, attention_mask, token_type_ids):
            positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
            x = self.words(input_ids) + self.positions(positions) + self.types(token_type_ids)
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            scores = q @ k.transpose(1, 2) / HIDDEN**0.5
            scores = scores + (1.0 - attention_mask[:, None, :].float()) * -10000.0
            states = self.norm(x + scores.softmax(dim=-1) @ v)
            if self.head is None:
                return states
            mask = attention_mask[:, :, None].float()
            return self.head((states * mask).sum(1) / mask.sum(1))

    encoder = Encoder().eval()
    ids = torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
    buffer = io.BytesIO()
    output = "logits" if labels else "last_hidden_state"
    torch.onnx.export(
        encoder,
        (ids, (ids > 0).long(), torch.zeros_like(ids)),
        buffer,
        dynamo=False,
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=[output],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "tokens"},
            "attention_mask": {0: "batch", 1: "tokens"},
            "token_type_ids": {0: "batch", 1: "tokens"},
            output: {0: "batch", 1: "tokens"} if not labels else {0: "batch"},
        },
        opset_version=17,
    )
    return buffer.getvalue()


def local_embeddings(onnx: bytes, tokenizer_json: str, texts: list[str]) -> tuple[np.ndarray, dict]:
    """The reference, computed here: `tokenizers` (padding to the longest) + ONNX Runtime + mean pooling over
    the attention mask + L2 normalization. Returns (embeddings, the model's outputs)."""
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    encodings = tokenizer.encode_batch(texts)
    feed = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    session = onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    (states,) = session.run(["last_hidden_state"], feed)
    mask = feed["attention_mask"][:, :, None].astype(np.float64)
    pooled = (states * mask).sum(axis=1) / mask.sum(axis=1)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True), {"last_hidden_state": states}


def publish_text_model(
    *, owner, name: str, task: str, labels=None, onnx: bytes | None = None, tokenizer_json: str | None = None
) -> ModelVersion:
    """Catalog rows as validation leaves them for a text model: a ready version with its tokenizer stored."""
    version = publish(
        owner=owner,
        name=name,
        data=onnx or tiny_encoder_onnx(labels=len(labels or [])),
        task=task,
        labels=labels,
    )
    raw = (tokenizer_json or wordpiece_tokenizer_json()).encode()
    sha = hashlib.sha256(raw).hexdigest()
    path = f"tokenizers/{sha[:2]}/{sha}.json"
    if not default_storage.exists(path):
        default_storage.save(path, ContentFile(raw))
    # A version is immutable once saved: the tokenizer columns are written as the upload would have.
    ModelVersion.objects.filter(pk=version.pk).update(
        tokenizer=path, tokenizer_size=len(raw), tokenizer_sha256=sha
    )
    return ModelVersion.objects.get(pk=version.pk)
