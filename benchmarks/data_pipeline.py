"""Throughput of the training data pipeline alone: decode + the MoCo v2 two-view augmentation.

    python benchmarks/data_pipeline.py                      # both sizes, 0 and 2 workers
    python benchmarks/data_pipeline.py --workers 0 2 4 --batches 20 --json out.json

Two cases, each read through ``create_dataset`` and ``build_train_loader`` exactly as training does,
with the transform ``build_multiview_transform(("crop", "crop"), augment)``:

* 32 px: the embedded ``digits`` (in-memory arrays, no decoding) with the digits recipe's augmentation;
* 224 px: an ``imagefolder`` of JPEGs (500x375, quality 90, about ImageNet's average size) cut from
  scikit-image's bundled sample photos and written to a temporary folder.

Reports images per second (one image = two views) after one warm-up batch, so worker start-up
is not counted. No model runs: compare with the training step's images/s on the same machine.

``--device-augment`` adds, per case, the split that ``ssl-zoo train --augment-on-device`` uses: the workers
do decode + crop + flip only (uint8 views) and the training device does colour jitter, grayscale, blur and
normalisation on the batch (``ssl_zoo.device_augment``); it reports the workers' images/s and the device
step's images/s (on this machine's CPU when there is no GPU).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import ssl_zoo
from ssl_zoo.data import build_train_loader, create_dataset
from ssl_zoo.recipe import AugmentCfg, get_recipe
from ssl_zoo.report import command_line, machine_info, machine_line, write_report
from ssl_zoo.transforms import build_multiview_transform

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "page", "text", "clock", "horse",
           "logo")


def make_jpeg_folder(root: Path, classes: int = 8, per_class: int = 32, size=(500, 375), seed: int = 0) -> Path:
    """An imagefolder of real-photo JPEG crops (scikit-image's bundled samples, no download)."""
    import skimage.data

    photos = []
    for name in SAMPLES:
        try:
            arr = getattr(skimage.data, name)()
        except Exception:  # a sample that would need a download: skip it
            continue
        img = Image.fromarray(arr).convert("RGB")
        scale = max(size[0] * 1.5 / img.width, size[1] * 1.5 / img.height, 1.0)
        photos.append(img.resize((int(img.width * scale) + 1, int(img.height * scale) + 1), Image.BICUBIC))
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            photo = photos[int(rng.integers(len(photos)))]
            x = int(rng.integers(photo.width - size[0] + 1))
            y = int(rng.integers(photo.height - size[1] + 1))
            photo.crop((x, y, x + size[0], y + size[1])).save(root / f"class_{c}" / f"{k}.jpg", quality=90)
    return root


def measure_device_photometric(augment: AugmentCfg, batch_size: int, batches: int) -> float:
    """Images/s of ``DeviceViewFinisher`` on two uint8 crop views, on the GPU if there is one, else the CPU."""
    from ssl_zoo.device_augment import DeviceViewFinisher

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    finisher = DeviceViewFinisher(("crop", "crop"), augment).to(device)
    size = augment.image_size
    views = [torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, device=device) for _ in range(2)]
    finisher(views)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        finisher(views)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def measure(dataset, batch_size: int, workers: int, batches: int) -> float:
    """Images per second over ``batches`` batches after one warm-up batch."""
    loader = build_train_loader(dataset, batch_size=batch_size, num_workers=workers, seed=0)
    it = iter(loader)
    next(it)  # warm-up: worker start-up and first prefetch
    done, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            views, _ = next(it)
        except StopIteration:
            it = iter(loader)
            views, _ = next(it)
        done += views[0].shape[0]
    return done / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=10, help="timed batches per case")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None, help="write a table with the machine and command")
    p.add_argument("--device-augment", action="store_true",
                   help="also measure geometry-only workers + the batched photometric step on the device")
    p.add_argument("--train-steps", type=int, default=3,
                   help="also time this many MoCo v2 ResNet-18 training steps per size (0: skip)")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # as in a DataLoader worker; the main process's threads belong to the model
    digits_aug = get_recipe("moco_v2_r18_digits").augment
    tmp = tempfile.TemporaryDirectory()
    folder = make_jpeg_folder(Path(tmp.name) / "jpegs")
    cases = [("digits", "32 px, in-memory", 128, digits_aug, lambda tf: create_dataset("digits", transform=tf)),
             ("imagefolder", "224 px, 500x375 JPEG decode", 64, AugmentCfg(image_size=224),
              lambda tf: create_dataset("imagefolder", folder, transform=tf))]
    splits = (False, True) if args.device_augment else (False,)

    rows, device_rows = [], []
    for name, what, batch, augment, make in cases:
        for on_device in splits:
            ds = make(build_multiview_transform(("crop", "crop"), augment, photometric_on_device=on_device))
            work = "decode + crop + flip" if on_device else "full augmentation"
            for w in args.workers:
                ips = measure(ds, batch, w, args.batches)
                rows.append({"dataset": name, "case": what, "workers_do": work, "batch_size": batch,
                             "num_workers": w, "images_per_s": round(ips, 1)})
                print(f"{name:12s} {what:30s} {work:22s} batch {batch:4d}  workers {w}: {ips:8.1f} images/s "
                      f"(2 views each)", flush=True)
        if args.device_augment:
            torch.set_num_threads(os.cpu_count() or 1)  # the device step runs in the main process
            ips = measure_device_photometric(augment, batch, args.batches)
            torch.set_num_threads(1)
            device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU, all threads"
            device_rows.append({"dataset": name, "image_size": augment.image_size, "batch_size": batch,
                                "device": device, "images_per_s": round(ips, 1)})
            print(f"{name:12s} device photometric step ({device}) batch {batch}: {ips:8.1f} images/s", flush=True)
    steps = []
    if args.train_steps > 0:
        torch.set_num_threads(os.cpu_count() or 1)  # the model gets every core, as in training
        for size, batch in ((32, 64), (224, 16)):
            ips = measure_train_step(size, batch, args.train_steps)
            steps.append({"image_size": size, "batch_size": batch, "images_per_s": round(ips, 1)})
            print(f"training step  MoCo v2 ResNet-18 {size:3d} px batch {batch:3d}: {ips:8.1f} images/s", flush=True)
    info = {"machine": machine_info(), "command": command_line("python benchmarks/data_pipeline.py", argv),
            "results": rows, "device_photometric": device_rows, "train_step": steps}
    write_report(markdown(info), info, markdown=args.markdown, json_path=args.json, echo=False)
    tmp.cleanup()
    return 0


def measure_train_step(image_size: int, batch: int, steps: int) -> float:
    """Images/s of full MoCo v2 optimiser steps (forward, backward, SGD, momentum update) on random views."""
    method = ssl_zoo.create_method("moco_v2_r18_digits", image_size=image_size)
    opt = torch.optim.SGD([p for g in method.parameter_groups() for p in g["params"]], lr=0.01, momentum=0.9)
    views = [torch.randn(batch, 3, image_size, image_size) for _ in method.view_names]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        method(views)["loss"].backward()
        opt.step()
        method.after_optimizer_step(0.0)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def markdown(info: dict) -> str:
    lines = ["| pipeline case | workers do | batch | workers | images/s (2 views each) |", "|---|---|---|---|---|"]
    lines += [f"| {r['dataset']}, {r['case']} | {r['workers_do']} | {r['batch_size']} | {r['num_workers']} "
              f"| {r['images_per_s']} |" for r in info["results"]]
    if info.get("device_photometric"):
        lines += ["", "| device photometric step (colour, grayscale, blur, normalise; 2 views) | size | batch "
                  "| device | images/s |", "|---|---|---|---|---|"]
        lines += [f"| {r['dataset']} | {r['image_size']} px | {r['batch_size']} | {r['device']} | "
                  f"{r['images_per_s']} |" for r in info["device_photometric"]]
    if info["train_step"]:
        lines += ["", "| training step (MoCo v2, ResNet-18, random views) | batch | images/s |", "|---|---|---|"]
        lines += [f"| {r['image_size']} px | {r['batch_size']} | {r['images_per_s']} |" for r in info["train_step"]]
    lines += ["", machine_line(info["machine"]), "",
              "Command:", "", f"```\n{info['command']}\n```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
