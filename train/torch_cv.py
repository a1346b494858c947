"""The compact CNN against EfficientNet-Lite0 under the same grouped cross-validation, in PyTorch, for
a lent GPU machine that has PyTorch but no TensorFlow (Keras training of Lite0 takes tens of minutes
per fold on 2 CPU cores). The shipped brain model comes from here: `run --save-epoch E --all-data`
trains it on the GPU, `assemble` moves its weights into the Keras model of train/model.py and writes
a `python -m train` run folder (train/run_folder.py) that python -m convert converts (`make brain-model`). The
shipped leukemia model, the compact CNN, is trained by python -m train.

Same as `python -m train --cv`: the preprocessed arrays, groups and folds (exported here), the networks
(Lite0 from the same ImageNet state dict, its BatchNorm kept in inference mode), balanced class
weights, batch 32, Adam, the cosine schedules, stain and blur jitter (train/augment.py). The Keras
preprocessing layers are matched by their PyTorch counterparts (flips, affine, brightness, contrast,
saturation, hue), so run the compact CNN here too and compare backbones within this harness.

    python -m train.torch_cv export brain --data DIR --data DIR2 --out runs/gpu/brain_128.npz
    python -m train.torch_cv run runs/gpu/brain_128.npz --task brain --backbone lite0 --augment light --out DIR  (GPU)
    python -m train.torch_cv report runs/gpu/brain_128.npz DIR   (writes DIR/cv.json and DIR/cv.md)
    python -m train.torch_cv assemble runs/gpu/brain_128.npz DIR --out runs/cv/brain_lite0   (then python -m convert it)

int8 against float32 on the fold models of `run --save-epoch E` is measured on the convert side:
`python -m convert.fold_int8 runs/gpu/brain_128.npz DIR --epoch E`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

# EfficientNet-Lite0 as in train/pretrained.py (the Keras port of the same state dict).
LITE0_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
PIXEL_SCALE, PIXEL_OFFSET = 255.0 / 128.0, -127.0 / 128.0
BN_EPSILON = 1e-3
RECIPE = "recipe.json"  # a run's recipe and fold times, beside its oof_scores.npz


def export(argv: list[str]) -> int:
    """python -m train's data options (task, --data, --size, crops, --cv, --seed, --cache; --out is the .npz)
    -> uint8 images, labels, groups and the folds of `python -m train --cv`."""
    from train.crossval import group_folds, grouped_images
    from train.options import add_data_arguments, spec_of

    parser = argparse.ArgumentParser(prog="python -m train.torch_cv export")
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="the .npz to write")
    parser.add_argument("--cv", type=int, default=5, metavar="K", help="folds (default 5)")
    args = parser.parse_args(argv)
    spec = spec_of(args)
    kept, x, y, groups, _ = grouped_images(args.task, args.data, spec, args.cache)
    pixels = np.round(x * 255)
    if np.abs(pixels - x * 255).max() > 1e-3:
        raise ValueError("the preprocessed images are not whole 8-bit levels")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, x=pixels.astype(np.uint8), y=y, groups=groups,
                        fold_of=group_folds(y, groups, args.cv, args.seed), spec=json.dumps(spec),
                        samples=json.dumps([asdict(sample) for sample in kept]), data=json.dumps(args.data))
    print(f"{len(y)} images {x.shape[1:]} of {len(set(groups))} groups -> {args.out}")
    return 0


def _same_padding(x, kernel: int, stride: int):
    """TensorFlow's SAME padding (the extra row and column at the bottom and right)."""
    import torch.nn.functional as F

    def total(size):
        return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)

    height, width = total(x.shape[-2]), total(x.shape[-1])
    return F.pad(x, (width // 2, width - width // 2, height // 2, height - height // 2))


def _networks():
    import torch
    from torch import nn
    import torch.nn.functional as F

    class SameConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(_same_padding(x, self.kernel_size[0], self.stride[0]))

    class CompactCNN(nn.Module):
        """train.model.build_model: Conv-BN-ReLU stem, depthwise-separable blocks, pooling, dropout."""

        def __init__(self, channels: int, width: int = 16):
            super().__init__()

            def conv_bn_relu(cin, cout, kernel, stride, groups=1):
                return [SameConv(cin, cout, kernel, stride, groups=groups, bias=False),
                        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1), nn.ReLU()]

            parts = conv_bn_relu(channels, width, 3, 2) + conv_bn_relu(width, 2 * width, 3, 2)
            cin = 2 * width
            for cout, stride in [(4 * width, 2), (4 * width, 1), (8 * width, 2), (8 * width, 1), (8 * width, 1)]:
                parts += conv_bn_relu(cin, cin, 3, stride, groups=cin) + conv_bn_relu(cin, cout, 1, 1)
                cin = cout
            self.features = nn.Sequential(*parts)
            self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(cin, 1))
            for module in self.modules():  # Keras' glorot-uniform kernels, zero biases
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)

        def forward(self, x):
            return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)

    class Block(nn.Module):
        def __init__(self, cin, cout, kernel, stride, expand):
            super().__init__()
            middle = cin * expand
            if expand != 1:
                self._expand_conv = nn.Conv2d(cin, middle, 1, bias=False)
                self._bn0 = nn.BatchNorm2d(middle, eps=BN_EPSILON)
            self._depthwise_conv = SameConv(middle, middle, kernel, stride, groups=middle, bias=False)
            self._bn1 = nn.BatchNorm2d(middle, eps=BN_EPSILON)
            self._project_conv = nn.Conv2d(middle, cout, 1, bias=False)
            self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPSILON)
            self.expand, self.residual = expand != 1, stride == 1 and cin == cout

        def forward(self, x):
            h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)))))
            return h + x if self.residual else h

    class Lite0(nn.Module):
        """Backbone named as the state dict's keys; a sigmoid head on pooled features, dropout 0.3."""

        def __init__(self, channels: int, state_dict: dict):
            super().__init__()
            self._conv_stem = SameConv(channels, 32, 3, 2, bias=False)
            self._bn0 = nn.BatchNorm2d(32, eps=BN_EPSILON)
            blocks, cin = [], 32
            for repeats, kernel, first_stride, expand, cout in LITE0_STAGES:
                for repeat in range(repeats):
                    blocks.append(Block(cin, cout, kernel, first_stride if repeat == 0 else 1, expand))
                    cin = cout
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPSILON)
            weights = {k: v for k, v in state_dict.items() if not k.startswith("_fc")}
            if channels == 1:  # a grey image replicated to RGB: the stem's weights summed over RGB
                weights["_conv_stem.weight"] = weights["_conv_stem.weight"].sum(dim=1, keepdim=True)
            self.load_state_dict(weights, strict=False)
            self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(1280, 1))
            nn.init.xavier_uniform_(self.head[1].weight)
            nn.init.zeros_(self.head[1].bias)

        def backbone_parameters(self):
            return [p for name, p in self.named_parameters() if not name.startswith("head")]

        def train(self, mode: bool = True):  # the backbone's BatchNorm always in inference mode
            super().train(mode)
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
            return self

        def forward(self, x):
            x = F.relu6(self._bn0(self._conv_stem(x * PIXEL_SCALE + PIXEL_OFFSET)))
            for block in self._blocks:
                x = block(x)
            x = F.relu6(self._bn1(self._conv_head(x)))
            return self.head(x.mean(dim=(2, 3))).squeeze(1)

    return torch, CompactCNN, Lite0


def augment_batch(torch, x, task: str, light: bool, generator):
    """The Keras augmentation of train.model.augmentation on an (n, c, h, w) batch in [0, 1]."""
    import torch.nn.functional as F

    n = x.shape[0]

    def uniform(low, high, *shape):
        return torch.rand(n, *shape, device=x.device, generator=generator) * (high - low) + low

    flip_x = uniform(0, 1) < 0.5
    x = torch.where(flip_x[:, None, None, None], x.flip(3), x)
    if task == "leukemia":
        x = torch.where((uniform(0, 1) < 0.5)[:, None, None, None], x.flip(2), x)
    if light:
        angle, shear_x, shear_y, zoom, shift = torch.zeros(n, device=x.device), 0, 0, 1, 0.05
    else:
        angle = uniform(-math.pi, math.pi) if task == "leukemia" else uniform(-0.05, 0.05) * 2 * math.pi
        shear_x, shear_y, zoom, shift = uniform(-0.1, 0.1), uniform(-0.1, 0.1), uniform(0.9, 1.1), 0.08
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shear = torch.eye(2, device=x.device).repeat(n, 1, 1)
    shear[:, 0, 1], shear[:, 1, 0] = shear_x, shear_y
    matrix = rotation @ shear * (zoom if isinstance(zoom, int) else zoom[:, None, None])
    translation = uniform(-shift, shift, 2) * 2  # in grid units, whose span is 2
    grid = F.affine_grid(torch.cat([matrix, translation[:, :, None]], 2), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if light:
        return x
    x = (x + uniform(-0.1, 0.1)[:, None, None, None]).clamp(0, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * uniform(0.85, 1.15)[:, None, None, None] + mean).clamp(0, 1)
    if task == "leukemia":
        grey = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device)[None, :, None, None]).sum(1, keepdim=True)
        x = (grey + (x - grey) * uniform(0.85, 1.15)[:, None, None, None]).clamp(0, 1)
        x = _rotate_hue(torch, x, uniform(-0.04, 0.04) * 2 * math.pi).clamp(0, 1)
    return x


def _rotate_hue(torch, x, angle):
    """Hue turned by `angle` radians in YIQ space (luma kept)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    to_rgb = torch.linalg.inv(to_yiq)
    cos, sin = torch.cos(angle), torch.sin(angle)
    turn = torch.zeros(len(angle), 3, 3, device=x.device)
    turn[:, 0, 0], turn[:, 1, 1], turn[:, 2, 2], turn[:, 1, 2], turn[:, 2, 1] = 1, cos, cos, -sin, sin
    matrices = to_rgb[None] @ turn @ to_yiq[None]
    return torch.einsum("nij,njhw->nihw", matrices, x)


def tta_views(torch, x, task: str) -> list:
    """train.fitting.tta_views on (n, c, h, w): the mirror image for MRI, flips and quarter turns for cells."""
    if task == "brain":
        return [x, x.flip(3)]
    return [torch.rot90(view, k, dims=(2, 3)) for view in (x, x.flip(3)) for k in range(4)]


def train_fold(arrays: str, task: str, backbone: str, augment: str, epochs: int, frozen_epochs: int,
               fold: int, weights_path: str | None, save_epoch: int | None = None, seed: int = 0,
               learning_rate: float = 2e-3, batch: int = 32) -> dict:
    """One fold: train on the other folds, score the held-out fold after every epoch (plain and TTA);
    with save_epoch, the model's weights at that epoch (float16, to travel back from the GPU machine)."""
    torch, CompactCNN, Lite0 = _networks()
    from train.augment import stain_blur_jitter, stain_jitter

    stored = np.load(arrays)
    x_all, y_all, fold_of = stored["x"], stored["y"], stored["fold_of"]
    if x_all.ndim == 3:
        x_all = x_all[..., None]
    held, train = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)  # fold -1: all of them
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(1)  # one process per fold: their threads would otherwise contend
    stream = seed + max(fold, 0)  # fold k as python -m train's fold k; all data as its shipped model (seed + 0)
    torch.manual_seed(stream)
    generator = torch.Generator(device=device).manual_seed(stream)
    rng = np.random.default_rng(stream)

    def tensor(images):
        return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device).float() / 255

    x_train, x_held = x_all[train].astype(np.float32) / 255, tensor(x_all[held])
    y_train = torch.from_numpy(y_all[train].astype(np.float32)).to(device)
    counts = np.bincount(y_all[train], minlength=2)
    class_weight = torch.tensor(len(train) / (2 * counts), dtype=torch.float32, device=device)
    channels = x_all.shape[-1]
    if backbone == "lite0":
        model = Lite0(channels, torch.load(weights_path, map_location="cpu")).to(device)
    else:
        model = CompactCNN(channels).to(device)
    steps = math.ceil(len(train) / batch)
    jitter = {"stain": stain_jitter, "stain_blur": stain_blur_jitter}.get(augment)

    def phase(parameters, rate, horizon_steps):
        optimizer = torch.optim.Adam(parameters, lr=rate, eps=1e-7)
        if horizon_steps is None:
            return optimizer, None
        return optimizer, torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, horizon_steps) / horizon_steps)))

    if backbone == "lite0":
        for p in model.backbone_parameters():
            p.requires_grad_(False)
        optimizer, schedule = phase(model.head.parameters(), learning_rate, None)
    else:
        optimizer, schedule = phase(model.parameters(), learning_rate, steps * epochs)
    scores = np.zeros((epochs, len(held)), np.float32)
    tta = np.zeros((epochs, len(held)), np.float32)
    started = time.time()
    for epoch in range(1, epochs + 1):
        if backbone == "lite0" and epoch == frozen_epochs + 1:
            for p in model.backbone_parameters():
                p.requires_grad_(True)
            optimizer, schedule = phase(model.parameters(), learning_rate / 20, steps * (epochs - frozen_epochs))
        model.train()
        order = rng.permutation(len(train))
        for start in range(0, len(train), batch):
            chosen = order[start:start + batch]
            images = x_train[chosen]
            if jitter is not None:
                images = jitter(images, rng)
            images = augment_batch(torch, tensor(images * 255), task, augment == "light", generator)
            labels = y_train[chosen]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels, reduction="none")
            loss = (loss * class_weight[labels.long()]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
        model.eval()
        if len(held):
            with torch.no_grad():
                views = [torch.cat([torch.sigmoid(model(v[i:i + 512])) for i in range(0, len(v), 512)])
                         for v in tta_views(torch, x_held, task)]
            scores[epoch - 1] = views[0].cpu().numpy()
            tta[epoch - 1] = torch.stack(views).mean(0).cpu().numpy()
        if epoch == save_epoch:
            saved = {k: v.detach().cpu().numpy().astype(np.float16) for k, v in model.state_dict().items()
                     if v.is_floating_point()}
    result = {"held": held, "scores": scores, "tta": tta, "seconds": time.time() - started}
    return {**result, "weights": saved} if save_epoch else result


def run(args: argparse.Namespace) -> int:
    """All folds in parallel processes (a small network leaves most of the GPU idle) -> out/oof_scores.npz."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from train.run_folder import Recipe, write_oof_scores

    stored = np.load(args.arrays)
    y, fold_of = stored["y"], stored["fold_of"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.all_data:  # the shipped model: every image, weights kept at --save-epoch
        result = train_fold(args.arrays, args.task, args.backbone, args.augment, args.epochs, args.frozen_epochs,
                            -1, args.weights, args.save_epoch)
        np.savez(out / f"all_epoch{args.save_epoch:02d}.npz", **result["weights"])
        print(f"{args.task} {args.backbone}: all {len(y)} images in {result['seconds']:.0f} s -> {out}", flush=True)
        return 0
    folds = int(fold_of.max()) + 1
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(folds, mp_context=context) as pool:
        jobs = [pool.submit(train_fold, args.arrays, args.task, args.backbone, args.augment, args.epochs,
                            args.frozen_epochs, fold, args.weights, args.save_epoch) for fold in range(folds)]
        results = [job.result() for job in jobs]
    scores = np.full((args.epochs, len(y)), np.nan, np.float32)
    tta = np.full((args.epochs, len(y)), np.nan, np.float32)
    for result in results:
        scores[:, result["held"]], tta[:, result["held"]] = result["scores"], result["tta"]
    write_oof_scores(out, scores, fold_of, y, {e: tta[e - 1] for e in range(4, args.epochs + 1, 4)})
    recipe = Recipe(preprocessing=json.loads(str(stored["spec"])), backbone=args.backbone, width=16, learning_rate=2e-3,
                    horizon=args.epochs, batch_size=32, augment=args.augment, seed=0, framework="pytorch",
                    frozen_epochs=args.frozen_epochs if args.backbone == "lite0" else None)
    (out / RECIPE).write_text(json.dumps(
        {"recipe": recipe.to_json(), "fold_seconds": [round(r["seconds"], 1) for r in results]}, indent=2) + "\n")
    if args.save_epoch:
        for fold, result in enumerate(results):
            np.savez(out / f"fold{fold}_epoch{args.save_epoch:02d}.npz", **result["weights"])
    print(f"{args.task} {args.backbone}: folds took {[round(r['seconds']) for r in results]} s -> {out}", flush=True)
    return 0


def report(arrays: str, run_dir: str, tta: bool, epoch: int | None = None) -> int:
    """cv.json and cv.md of a run, chosen and summarised exactly as python -m train --cv does, and a split.json
    of its groups and folds (images by their index in the arrays) for train.compare_cv."""
    from edge.labels import labels_for
    from train.cv_report import oof_report
    from train.run_folder import Recipe, read_oof_scores, write_index_split

    stored = np.load(arrays)
    task = task_of(json.loads(str(stored["spec"])))
    out = Path(run_dir)
    oof = read_oof_scores(out)
    recipe = Recipe.from_json(json.loads((out / RECIPE).read_text())["recipe"])
    grouped_by = "patients" if task == "leukemia" else "near-duplicate groups"
    write_index_split(out, task, grouped_by, arrays, stored["groups"], stored["fold_of"])
    oof_report(task, labels_for(task), stored["y"], stored["groups"], stored["fold_of"], oof, recipe, tta,
               grouped_by, out, fixed_epoch=epoch)
    return 0


def task_of(spec: dict) -> str:
    return "leukemia" if spec["name"] == "cnmc_cell" else "brain"


def keras_lite0(weights: dict, input_shape: tuple[int, int, int]):
    """The Keras Lite0 classifier of train.model with the weights of a model trained here (state-dict
    names, as saved by `run --save-epoch`)."""
    from train.model import build_pretrained_model
    from train.pretrained import load_lite0_weights

    model, backbone = build_pretrained_model(input_shape)
    load_lite0_weights(backbone, {k: np.asarray(v, np.float32) for k, v in weights.items()})
    model.get_layer("score").set_weights([np.asarray(weights["head.1.weight"], np.float32).T,
                                          np.asarray(weights["head.1.bias"], np.float32)])
    return model


def keras_fold_models(source: Path, target: Path, epoch: int, folds: int, shape) -> list[str]:
    """The fold weights of `run --save-epoch` in source as Keras models in target/folds -> their paths
    relative to target."""
    (target / "folds").mkdir(parents=True, exist_ok=True)
    paths = [f"folds/fold{fold}_epoch{epoch:02d}.keras" for fold in range(folds)]
    for fold, path in enumerate(paths):
        keras_lite0(dict(np.load(source / f"fold{fold}_epoch{epoch:02d}.npz")), shape).save(target / path)
    return paths


def assemble(arrays: str, run_dir: str, out: str) -> Path:
    """A run of `run --save-epoch E` (folds and --all-data) and its report at epoch E -> a `python -m train`
    run folder (train/run_folder.py: the model, its fold models, split, cross-validation and config) that
    python -m convert converts and verifies on the fold models' held-out images, as it does for python -m train --cv runs."""
    from edge.labels import labels_for
    from train.run_folder import (CV_MARKDOWN, MODEL, OOF_SCORES, CvSummary, Recipe, RunConfig, cv_split, read_cv,
                                  write_config, write_cv, write_split)

    stored = np.load(arrays)
    source, target = Path(run_dir), Path(out)
    cv = read_cv(source)
    epoch, recipe = cv["epoch"], Recipe.from_json(cv["recipe"])
    task = task_of(recipe.preprocessing)
    if recipe.backbone != "lite0":
        raise ValueError(f"{source}: only Lite0 runs can be assembled (the compact CNN is trained by python -m train)")
    shape = stored["x"].shape[1:]
    fold_models = keras_fold_models(source, target, epoch, cv["folds"], shape)
    model = keras_lite0(dict(np.load(source / f"all_epoch{epoch:02d}.npz")), shape)
    model.save(target / MODEL)
    write_split(target, cv_split(task, recipe.seed, cv["grouped_by"], json.loads(str(stored["samples"])),
                                 stored["groups"], stored["fold_of"]))
    write_cv(target, cv, (source / CV_MARKDOWN).read_text())
    (target / OOF_SCORES).write_bytes((source / OOF_SCORES).read_bytes())
    write_config(target, RunConfig(
        task=task, labels=list(labels_for(task)), preprocessing=recipe.preprocessing, threshold=cv["threshold"],
        threshold_policy=cv["threshold_policy"], grouped_by=cv["grouped_by"], seed=recipe.seed,
        data=json.loads(str(stored["data"])), epochs_run=epoch, params=int(model.count_params()), recipe=recipe,
        cv=CvSummary.of({**cv, "test_time_augmentation": None}, fold_models),
        trained_with="PyTorch (python -m train.torch_cv), weights moved into the Keras model of train.model"))
    print(f"{target}: model.keras and {len(fold_models)} fold models at epoch {epoch}")
    return target


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        return export(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m train.torch_cv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run")
    runner.add_argument("arrays")
    runner.add_argument("--task", choices=["brain", "leukemia"], required=True)
    runner.add_argument("--backbone", choices=["small", "lite0"], required=True)
    runner.add_argument("--augment", choices=["light", "basic", "stain", "stain_blur"], required=True)
    runner.add_argument("--epochs", type=int, default=24)
    runner.add_argument("--frozen-epochs", type=int, default=2)
    runner.add_argument("--weights", help="lite0: the efficientnet-lite0 .pth state dict")
    runner.add_argument("--save-epoch", type=int, help="keep each fold model's weights at this epoch (float16)")
    runner.add_argument("--all-data", action="store_true", help="train one model on every image (needs --save-epoch)")
    runner.add_argument("--out", required=True)
    reporter = commands.add_parser("report")
    reporter.add_argument("arrays")
    reporter.add_argument("run_dir")
    reporter.add_argument("--tta", action="store_true", help="choose among the epochs with TTA scores")
    reporter.add_argument("--epoch", type=int, help="the epoch an earlier run of the same recipe chose (GPU training "
                                                   "is not bit-for-bit repeatable), instead of choosing again")
    assembler = commands.add_parser("assemble")
    assembler.add_argument("arrays")
    assembler.add_argument("run_dir", help="a run with cv.json, its fold weights and all-data weights at the CV's epoch")
    assembler.add_argument("--out", required=True, help="the python -m train run folder to write, for python -m convert")
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.all_data and not args.save_epoch:
            parser.error("--all-data needs --save-epoch")
        return run(args)
    if args.command == "assemble":
        assemble(args.arrays, args.run_dir, args.out)
        return 0
    return report(args.arrays, args.run_dir, args.tta, args.epoch)


if __name__ == "__main__":
    raise SystemExit(main())
