"""Train a compact CNN for a fixed number of epochs on a learning-rate schedule that does not depend on
when training stops (cosine decay over a fixed horizon), so a model scored at epoch e of a
cross-validation fold is trained exactly as a shipped model stopped at epoch e."""
from __future__ import annotations

import os

import numpy as np

from train.run_folder import Recipe

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def group_balanced_weights(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per-image training weights: each image weighted by 1/sqrt(images of its patient or group), then
    each class scaled to the total that balanced class weights give it (n/2), so a patient with 400
    cells counts about 20 times one with a single cell instead of 400 times."""
    _, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    weights = 1.0 / np.sqrt(counts[index])
    for label in (0, 1):
        members = y == label
        weights[members] *= (len(y) / 2) / weights[members].sum()
    return weights.astype("float32")


def training_dataset(x: np.ndarray, y: np.ndarray, task: str, recipe: Recipe, weights: np.ndarray | None = None):
    """Batches of (images, labels) or, with per-image weights, (images, labels, weights)."""
    import tensorflow as tf

    from train.model import augmentation

    augment = augmentation(task, light=recipe.augment == "light")
    rng = np.random.default_rng(recipe.seed)
    columns = (x, y.astype("float32")) if weights is None else (x, y.astype("float32"), weights)
    dataset = (tf.data.Dataset.from_tensor_slices(columns)
               .shuffle(len(x), seed=recipe.seed, reshuffle_each_iteration=True)
               .batch(recipe.batch_size))
    if recipe.augment in ("stain", "stain_blur"):
        from train.augment import stain_blur_jitter, stain_jitter

        jitter_images = stain_jitter if recipe.augment == "stain" else stain_blur_jitter

        def jitter(images):
            return jitter_images(images, rng)

        def with_stain(images, *rest):
            jittered = tf.numpy_function(jitter, [images], tf.float32, stateful=True)
            return tf.ensure_shape(jittered, images.shape), *rest

        if task != "leukemia":
            raise ValueError("stain augmentation is for cells (leukemia)")
        dataset = dataset.map(with_stain, num_parallel_calls=1)
    elif recipe.augment not in ("basic", "light"):
        raise ValueError(f"unknown augmentation {recipe.augment!r}")
    return (dataset.map(lambda images, *rest: (augment(images, training=True), *rest),
                        num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def fit(x: np.ndarray, y: np.ndarray, task: str, recipe: Recipe, epochs: int, on_epoch=None, verbose: int = 0,
        groups: np.ndarray | None = None):
    """-> the model after `epochs` epochs; on_epoch(epoch_number, model) is called after each one.
    The small CNN trains on a cosine schedule from the learning rate over the horizon. Lite0 trains
    its head alone at the learning rate for `frozen_epochs`, then every layer on a cosine schedule
    from a twentieth of it over the remaining epochs of the horizon. recipe.group_balance weights
    images by their patient or group (`groups`, see group_balanced_weights); recipe.ema (a
    momentum) keeps an exponential moving average of the weights, which on_epoch and the returned
    model see."""
    import keras
    from sklearn.utils.class_weight import compute_class_weight

    from train.model import build_model, build_pretrained_model

    if epochs > recipe.horizon:
        raise ValueError(f"epochs {epochs} beyond the schedule horizon {recipe.horizon}")
    keras.utils.set_random_seed(recipe.seed)
    if recipe.group_balance:
        if groups is None:
            raise ValueError("group_balance needs the images' groups")
        dataset, class_weight = training_dataset(x, y, task, recipe, group_balanced_weights(y, groups)), None
    else:
        weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
        dataset, class_weight = training_dataset(x, y, task, recipe), {0: float(weights[0]), 1: float(weights[1])}
    steps = int(np.ceil(len(x) / recipe.batch_size))
    ema = recipe.ema
    callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema else []  # before on_epoch: it sees the average
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, model)))

    def train(learning_rate, until: int, after: int = 0):
        optimizer = keras.optimizers.Adam(learning_rate, use_ema=True, ema_momentum=ema) if ema else keras.optimizers.Adam(learning_rate)
        model.compile(optimizer=optimizer, loss="binary_crossentropy")
        model.fit(dataset, shuffle=False, epochs=until, initial_epoch=after, class_weight=class_weight, callbacks=callbacks, verbose=verbose)

    if recipe.backbone == "small":
        model = build_model(x.shape[1:], width=recipe.width)
        train(keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=steps * recipe.horizon),
              epochs)
        return model
    model, backbone = build_pretrained_model(x.shape[1:])
    frozen = recipe.frozen_epochs
    backbone.trainable = False
    train(recipe.learning_rate, min(epochs, frozen))
    if epochs > frozen:
        backbone.trainable = True
        train(keras.optimizers.schedules.CosineDecay(recipe.learning_rate / 20,
                                                     decay_steps=steps * (recipe.horizon - frozen)),
              epochs, after=frozen)
    return model


def tta_views(task: str, x: np.ndarray) -> list[np.ndarray]:
    """The views averaged by test-time augmentation: a cell has no up (8 flips and quarter turns);
    an axial MRI slice has left and right but a fixed up (the mirror image)."""
    if task == "brain":
        return [x, x[:, :, ::-1]]
    return [np.rot90(view, k, axes=(1, 2)) for view in (x, x[:, :, ::-1]) for k in range(4)]


def predict(model, x: np.ndarray, task: str | None = None) -> np.ndarray:
    """Positive scores; with a task, the mean over its test-time augmentation views."""
    if task is None:
        return model.predict(x, batch_size=256, verbose=0).ravel()
    views = tta_views(task, x)
    return np.mean([model.predict(np.ascontiguousarray(v), batch_size=256, verbose=0).ravel() for v in views], axis=0)
