"""Compact CNNs built for full-integer int8 TFLite: Conv-BN-ReLU stem, depthwise-separable
blocks, global average pooling and one sigmoid unit. Every op has an int8 TFLite kernel."""
from __future__ import annotations

import keras
from keras import layers


def _conv_bn_relu(x, filters: int, kernel: int = 3, strides: int = 1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    return layers.ReLU()(x)


def _separable_block(x, filters: int, strides: int):
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.ReLU()(x)
    return _conv_bn_relu(x, filters, kernel=1)


def build_model(input_shape: tuple[int, int, int], width: int = 16, dropout: float = 0.3) -> keras.Model:
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn_relu(inputs, width, strides=2)
    x = _conv_bn_relu(x, 2 * width, strides=2)
    for filters, strides in [(4 * width, 2), (4 * width, 1), (8 * width, 2), (8 * width, 1), (8 * width, 1)]:
        x = _separable_block(x, filters, strides)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="score")(x)
    return keras.Model(inputs, outputs, name="edge_cnn")


def augmentation(task: str, light: bool = False) -> keras.Sequential:
    """Training-only augmentation: the seeds' geometry, plus stain/colour jitter and any
    orientation for cells (a cell on a slide has no up). light: the flip and a small translation
    only (to measure how much the rest helps)."""
    if light:
        flip = "horizontal" if task == "brain" else "horizontal_and_vertical"
        return keras.Sequential([layers.RandomFlip(flip), layers.RandomTranslation(0.05, 0.05, fill_mode="constant")],
                                name=f"{task}_light_augmentation")
    geometry = [
        layers.RandomTranslation(0.08, 0.08, fill_mode="constant"),
        layers.RandomShear(x_factor=0.1, y_factor=0.1, fill_mode="constant"),
        layers.RandomZoom(0.1, fill_mode="constant"),
    ]
    if task == "brain":
        steps = [layers.RandomFlip("horizontal"), layers.RandomRotation(0.05, fill_mode="constant"), *geometry,
                 layers.RandomBrightness(0.1, value_range=(0, 1)), layers.RandomContrast(0.15)]
    else:
        steps = [layers.RandomFlip("horizontal_and_vertical"), layers.RandomRotation(0.5, fill_mode="constant"),
                 *geometry, layers.RandomBrightness(0.1, value_range=(0, 1)), layers.RandomContrast(0.15),
                 layers.RandomSaturation(0.15, value_range=(0, 1)), layers.RandomHue(0.04, value_range=(0, 1))]
    return keras.Sequential(steps, name=f"{task}_augmentation")


def build_pretrained_model(input_shape: tuple[int, int, int], dropout: float = 0.3) -> tuple[keras.Model, keras.Model]:
    """ImageNet-pretrained EfficientNet-Lite0 (ReLU6, no squeeze-excite: made for int8) with a
    sigmoid head. -> (model, backbone); the backbone always runs its BatchNorm in inference mode,
    so fine-tuning on a few thousand images does not disturb its statistics."""
    from train.pretrained import efficientnet_lite0

    backbone = efficientnet_lite0(input_shape, weights=True)
    inputs = keras.Input(shape=input_shape, name="image")
    x = backbone(inputs, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="score")(x)
    return keras.Model(inputs, outputs, name="lite0_classifier"), backbone


@keras.saving.register_keras_serializable(package="edge_medical")
class Mirror(layers.Layer):
    """Left-right mirror image of an NHWC batch (TFLite REVERSE_V2, int8 included)."""

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=2)


def with_mirror_tta(model: keras.Model) -> keras.Model:
    """One model that scores an image and its mirror image and averages them (test-time augmentation
    inside the .tflite, so the device needs nothing more)."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    scores = [model(inputs), model(Mirror()(inputs))]
    return keras.Model(inputs, layers.Average(name="score")(scores), name=f"{model.name}_mirror_tta")


def with_features(model: keras.Model) -> tuple[keras.Model, list[int]]:
    """The same model with a second output for the device's out-of-domain check: the pooled outputs
    of its first two ReLU layers and its last pooled features, side by side (Lite0: see
    _lite0_score_and_features). -> (model, the size of
    each layer's part). A mirror-TTA model's features are the mean over both views, an ensemble's
    are its members' side by side."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    score, parts = _score_and_features(model, inputs)
    features = parts[0] if len(parts) == 1 else layers.Concatenate(name="features")(parts)
    return (keras.Model(inputs, [score, features], name=f"{model.name}_with_features"),
            [int(part.shape[-1]) for part in parts])


EARLY_LAYERS = 2  # the first ReLU layers whose pooled outputs join the features
# Lite0's first six ReLU6 layers (32 to 144 channels): on the fold models they flagged 100% of C-NMC
# cells and 97.9% of blurred scans, where the first two flagged 64.1% and 37.6% (benchmarks/DOMAIN_LAYERS.md)
LITE0_EARLY_LAYERS = ("stem_relu6", "block0_depthwise_relu6", "block1_expand_relu6", "block1_depthwise_relu6",
                      "block2_expand_relu6", "block2_depthwise_relu6")
LITE0_FEATURE_GROUPS = 128  # Lite0's 1,280 pooled features as 128 means of 10 neighbouring channels


def _lite0_score_and_features(model: keras.Model, inputs):
    """Lite0: the backbone run once for its output and its first six ReLU6 maps; the 1,280 pooled
    features enter the check as 128 group means, so its statistics (a 128x128 precision matrix, not
    1,280x1,280) stay small enough for the model's JSON sidecar."""
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    early = [backbone.get_layer(name).output for name in LITE0_EARLY_LAYERS]
    outputs = keras.Model(backbone.input, [backbone.output, *early])(inputs)
    last = layers.GlobalAveragePooling2D()(outputs[0])
    score = model.get_layer("score")(last)  # the dropout before it is inactive at inference
    return score, [*(layers.GlobalAveragePooling2D()(m) for m in outputs[1:]), lite0_grouped_features(last)]


def lite0_grouped_features(pooled):
    """(n, 1,280) pooled features -> (n, 128) means of neighbouring channels (int8-TFLite-friendly ops)."""
    width = int(pooled.shape[-1]) // LITE0_FEATURE_GROUPS
    grouped = layers.Reshape((LITE0_FEATURE_GROUPS, width, 1))(pooled)
    return layers.Flatten()(layers.AveragePooling2D((1, width))(grouped))


def _score_and_features(model: keras.Model, inputs):
    if model.name == "lite0_classifier":
        return _lite0_score_and_features(model, inputs)
    pooled = [layer for layer in model.layers if isinstance(layer, layers.GlobalAveragePooling2D)]
    if pooled:  # a plain CNN
        early = [layer.output for layer in model.layers if isinstance(layer, layers.ReLU)][:EARLY_LAYERS]
        outputs = keras.Model(model.input, [model.output, *early, pooled[0].output])(inputs)
        score, maps, last = outputs[0], outputs[1:-1], outputs[-1]
        return score, [*(layers.GlobalAveragePooling2D()(m) for m in maps), last]
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if model.name.endswith("_mirror_tta") and len(inner) == 1:
        score_a, parts_a = _score_and_features(inner[0], inputs)
        score_b, parts_b = _score_and_features(inner[0], Mirror()(inputs))
        return layers.Average()([score_a, score_b]), [layers.Average()([a, b]) for a, b in zip(parts_a, parts_b)]
    if model.name == "ensemble" and len(inner) > 1:
        outputs = [_score_and_features(member, inputs) for member in inner]
        return layers.Average()([score for score, _ in outputs]), [part for _, parts in outputs for part in parts]
    raise ValueError(f"cannot find the pooled features of model {model.name!r}")
