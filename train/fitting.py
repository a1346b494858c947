"""Train a compact CNN for a fixed number of epochs on a learning-rate schedule that does not depend on
when training stops (cosine decay over a fixed horizon), so a model scored at epoch e of a
cross-validation fold is trained exactly as a shipped model stopped at epoch e."""
from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def training_dataset(x: np.ndarray, y: np.ndarray, task: str, recipe: dict):
    import tensorflow as tf

    from train.model import augmentation

    augment = augmentation(task, light=recipe["augment"] == "light")
    rng = np.random.default_rng(recipe["seed"])
    dataset = (tf.data.Dataset.from_tensor_slices((x, y.astype("float32")))
               .shuffle(len(x), seed=recipe["seed"], reshuffle_each_iteration=True)
               .batch(recipe["batch_size"]))
    if recipe["augment"] in ("stain", "stain_blur"):
        from train.augment import stain_blur_jitter, stain_jitter

        jitter_images = stain_jitter if recipe["augment"] == "stain" else stain_blur_jitter

        def jitter(images):
            return jitter_images(images, rng)

        def with_stain(images, labels):
            jittered = tf.numpy_function(jitter, [images], tf.float32, stateful=True)
            return tf.ensure_shape(jittered, images.shape), labels

        if task != "leukemia":
            raise ValueError("stain augmentation is for cells (leukemia)")
        dataset = dataset.map(with_stain, num_parallel_calls=1)
    elif recipe["augment"] not in ("basic", "light"):
        raise ValueError(f"unknown augmentation {recipe['augment']!r}")
    return (dataset.map(lambda images, labels: (augment(images, training=True), labels),
                        num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def fit(x: np.ndarray, y: np.ndarray, task: str, recipe: dict, epochs: int, on_epoch=None, verbose: int = 0):
    """-> the model after `epochs` epochs; on_epoch(epoch_number, model) is called after each one.
    The small CNN trains on a cosine schedule from the learning rate over the horizon. Lite0 trains
    its head alone at the learning rate for `frozen_epochs`, then every layer on a cosine schedule
    from a twentieth of it over the remaining epochs of the horizon."""
    import keras
    from sklearn.utils.class_weight import compute_class_weight

    from train.model import build_model, build_pretrained_model

    if epochs > recipe["horizon"]:
        raise ValueError(f"epochs {epochs} beyond the schedule horizon {recipe['horizon']}")
    keras.utils.set_random_seed(recipe["seed"])
    dataset = training_dataset(x, y, task, recipe)
    steps = int(np.ceil(len(x) / recipe["batch_size"]))
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=y)
    callbacks = []
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: on_epoch(epoch + 1, model)))

    def train(learning_rate, until: int, after: int = 0):
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
        model.fit(dataset, epochs=until, initial_epoch=after, class_weight={0: float(weights[0]), 1: float(weights[1])},
                  callbacks=callbacks, verbose=verbose)

    if recipe["backbone"] == "small":
        model = build_model(x.shape[1:], width=recipe["width"])
        train(keras.optimizers.schedules.CosineDecay(recipe["learning_rate"], decay_steps=steps * recipe["horizon"]),
              epochs)
        return model
    model, backbone = build_pretrained_model(x.shape[1:])
    frozen = recipe["frozen_epochs"]
    backbone.trainable = False
    train(recipe["learning_rate"], min(epochs, frozen))
    if epochs > frozen:
        backbone.trainable = True
        train(keras.optimizers.schedules.CosineDecay(recipe["learning_rate"] / 20,
                                                     decay_steps=steps * (recipe["horizon"] - frozen)),
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
