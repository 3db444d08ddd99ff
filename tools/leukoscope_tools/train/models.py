"""The paper's three networks in Keras 3, and inference-only copies for int8 conversion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras

from leukoscope.analysis.preprocess import PreprocessParams

logger = logging.getLogger(__name__)

LABELS = ["normal", "leukemia"]
POSITIVE = "leukemia"


@dataclass(frozen=True)
class ArchSpec:
    """What an architecture needs: its input size and whether it ends in one sigmoid."""

    name: str
    input_size: tuple[int, int]
    sigmoid: bool
    learning_rate: float

    @property
    def params(self) -> PreprocessParams:
        """The preprocessing recorded in this architecture's bundle."""
        return PreprocessParams(input_size=self.input_size)


ARCHS = {
    "basic-cnn": ArchSpec("basic-cnn", (128, 128), True, 1e-3),
    "alexnet": ArchSpec("alexnet", (227, 227), False, 1e-4),
    "thanh": ArchSpec("thanh", (128, 128), False, 1e-3),
}


def _basic_cnn(keras: Any, dropout: bool) -> list[Any]:
    # The paper's basic CNN: three 3x3 convolutions of 128 filters, each max-pooled.
    layers = keras.layers
    out: list[Any] = []
    for _ in range(3):
        out += [layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(2)]
    out += [layers.Flatten(), layers.Dense(64, activation="relu")]
    if dropout:
        out.append(layers.Dropout(0.5))
    out.append(layers.Dense(1, activation="sigmoid"))
    return out


def _alexnet(keras: Any, dropout: bool) -> list[Any]:
    # AlexNet (Krizhevsky et al. 2012) at 227x227, with batch normalisation in place of
    # local response normalisation (which TFLite int8 does not support).
    layers = keras.layers
    out: list[Any] = [
        layers.Conv2D(96, 11, strides=4, activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(3, strides=2),
        layers.Conv2D(256, 5, padding="same", activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(3, strides=2),
        layers.Conv2D(384, 3, padding="same", activation="relu"),
        layers.Conv2D(384, 3, padding="same", activation="relu"),
        layers.Conv2D(256, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(3, strides=2),
        layers.Flatten(),
    ]
    for _ in range(2):
        out.append(layers.Dense(4096, activation="relu"))
        if dropout:
            out.append(layers.Dropout(0.5))
    out.append(layers.Dense(2, activation="softmax"))
    return out


def _thanh(keras: Any, dropout: bool) -> list[Any]:
    # Modified Thanh et al.: 5x5 valid convolutions of 16/32/64 filters, 2x2/2 pooling,
    # one fully connected layer, softmax over the two classes.
    layers = keras.layers
    out: list[Any] = []
    for filters in (16, 32, 64):
        out += [
            layers.Conv2D(filters, 5, padding="valid", activation="relu"),
            layers.MaxPooling2D(2, strides=2),
        ]
    out += [layers.Flatten(), layers.Dense(128, activation="relu")]
    if dropout:
        out.append(layers.Dropout(0.5))
    out.append(layers.Dense(2, activation="softmax"))
    return out


_BUILDERS = {"basic-cnn": _basic_cnn, "alexnet": _alexnet, "thanh": _thanh}


def build_model(arch: str, *, dropout: bool = True) -> Any:
    """A fresh Keras model of one of the paper's architectures (weights from Keras's seed)."""
    spec = ARCHS[arch]
    w, h = spec.input_size
    return keras.Sequential([keras.Input((h, w, 3)), *_BUILDERS[arch](keras, dropout)], name=arch)


def inference_copy(model: Any, arch: str) -> Any:
    """The same network without Dropout, carrying the trained weights (for int8 conversion).

    Keras 3's Dropout keeps a seed-generator variable that breaks TFLite calibration, and
    Dropout holds no weights, so the copy's weights are the trained ones in order.
    """
    copy = build_model(arch, dropout=False)
    copy.set_weights(model.get_weights())
    return copy
