"""k-NN and retrieval time against the plain chunked similarity matmul of the same shapes.

    python benchmarks/eval_speed.py --json docs/results/eval_speed.json --markdown docs/results/eval_speed.md
    python benchmarks/eval_speed.py --threads 1 --sort-baseline ...   # a shared CPU: compare CPU times
    python benchmarks/eval_speed.py --bank 1000 --queries 100 --retrieval-n 500 --dim 64   # a quick look
    python benchmarks/eval_speed.py --only embed --threads 1   # feature extraction vs a plain timm loop

Cases (defaults): k-NN with a bank of 50,000 features, 1,000 queries, k = 20 and 200; leave-one-out
retrieval (rank-1, rank-5, mAP) on 6,000 features; all of dimension 2,048, random Gaussian features.
The reference for each is the floor any exact method pays: L2-normalise, then one ``chunk x N``
similarity matmul per chunk of queries, nothing else (same chunk size, same device).
``--sort-baseline`` also times the previous implementation's extra step, a full stable sort of every
similarity row, on top of that matmul. The ``embed`` group times the feature extraction that ``ssl-zoo eval``,
``embed``, ``neighbors`` and ``map`` share (``extract_features``) against a plain timm forward loop over the same
DataLoader (``--embed-arch`` at ``--embed-size`` px, random images in memory, so only the model and the loop
count). Each case is run once to warm up and then ``--repeats`` times, cases interleaved so machine load hits
them alike; the table gives medians of wall and CPU time and ratios to the first case of each group. Runs on
``cuda`` when available (``--device`` to choose).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ssl_zoo.evaluation.features import extract_features
from ssl_zoo.evaluation.metrics import DEFAULT_CHUNK_SIZE, knn_predict, retrieval_metrics
from ssl_zoo.report import command_line, machine_info, machine_line, write_report


def chunked_matmul(queries: torch.Tensor, bank: torch.Tensor, chunk: int, sort: bool = False) -> None:
    """The similarity blocks every exact k-NN / retrieval computes (optionally fully sorted, as before)."""
    bank = F.normalize(bank.float(), dim=1)
    for start in range(0, queries.shape[0], chunk):
        similarity = F.normalize(queries[start:start + chunk].float(), dim=1) @ bank.T
        if sort:
            torch.sort(similarity, dim=1, descending=True, stable=True)


def plain_forward_loop(encoder: torch.nn.Module, loader: torch.utils.data.DataLoader,
                       device: torch.device) -> None:
    """What anyone would write: eval mode, no_grad, each batch to the device and through the encoder."""
    encoder.eval()
    with torch.no_grad():
        for images, _ in loader:
            encoder(images.to(device, non_blocking=True))


def embed_cases(args: argparse.Namespace, device: torch.device) -> dict[str, tuple[str, str, Callable[[], object]]]:
    import timm
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(1)
    images = torch.randn(args.embed_images, 3, args.embed_size, args.embed_size, generator=g)
    loader = DataLoader(TensorDataset(images, torch.zeros(args.embed_images, dtype=torch.long)),
                        batch_size=args.embed_batch, shuffle=False, num_workers=0)
    encoder = timm.create_model(args.embed_arch, num_classes=0).to(device).eval()
    shape = f"{args.embed_arch}, {args.embed_images} images of {args.embed_size} px, batch {args.embed_batch}"
    from accelerate import Accelerator

    # ssl-zoo embed / eval run under an Accelerator (one process here): its loader wrapper and gather included
    accelerator = Accelerator(cpu=device.type == "cpu")
    return {"embed timm loop": ("embed", shape, lambda: plain_forward_loop(encoder, loader, device)),
            "embed extract_features": ("embed", shape, lambda: extract_features(encoder, loader, device=device)),
            "embed extract_features (Accelerator)": ("embed", shape, lambda: extract_features(
                encoder, loader, accelerator=accelerator))}


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). CPU time is what other load on a shared machine
    disturbs least; with one thread it is the work done. Meaningless for CUDA, which the CPU only waits on."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bank", type=int, default=50_000, help="k-NN training-bank size")
    p.add_argument("--queries", type=int, default=1_000, help="k-NN test queries")
    p.add_argument("--k", type=int, nargs="+", default=[20, 200], help="k-NN neighbour counts")
    p.add_argument("--knn-classes", type=int, default=1_000, help="classes of the k-NN bank labels")
    p.add_argument("--retrieval-n", type=int, default=6_000, help="retrieval items (each queries all others)")
    p.add_argument("--retrieval-classes", type=int, default=200,
                   help="classes of the retrieval labels (200: about 30 images a class, like CUB-200)")
    p.add_argument("--dim", type=int, default=2_048, help="feature dimension (ResNet-50: 2048)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case after one warm-up run")
    p.add_argument("--sort-baseline", action="store_true",
                   help="also time matmul + full stable sort of every row (the implementation before topk)")
    p.add_argument("--only", choices=["knn", "retrieval", "embed"], default=None, help="time one group")
    p.add_argument("--embed-arch", default="resnet18", help="timm model of the embed group (default resnet18)")
    p.add_argument("--embed-images", type=int, default=512, help="images of the embed group (default 512)")
    p.add_argument("--embed-size", type=int, default=64, help="their size in px (default 64)")
    p.add_argument("--embed-batch", type=int, default=64, help="their batch size (default 64)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None, help="write a table with the machine and command")
    args = p.parse_args(argv)
    if min(args.bank, args.queries, args.retrieval_n, args.dim, args.chunk_size, args.repeats, *args.k) < 1:
        p.error("sizes, k, --chunk-size and --repeats must be >= 1")

    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    knn_n = args.bank if args.only in (None, "knn") else 0  # a group left out gets empty data
    bank = torch.randn(knn_n, args.dim, generator=g).to(device)
    bank_labels = torch.randint(0, args.knn_classes, (knn_n,), generator=g).to(device)
    queries = torch.randn(args.queries if knn_n else 0, args.dim, generator=g).to(device)
    ret_n = args.retrieval_n if args.only in (None, "retrieval") else 0
    items = torch.randn(ret_n, args.dim, generator=g).to(device)
    item_labels = torch.randint(0, args.retrieval_classes, (ret_n,), generator=g).to(device)
    chunk = args.chunk_size

    knn_shape = f"bank {args.bank:,} x {args.queries:,} queries, D = {args.dim:,}"
    ret_shape = f"N = {args.retrieval_n:,}, D = {args.dim:,}, {args.retrieval_classes} classes"
    # case -> (group, shape, function); the first case of each group is its reference
    cases: dict[str, tuple[str, str, Callable[[], object]]] = {}
    cases["knn matmul"] = ("knn", knn_shape, lambda: chunked_matmul(queries, bank, chunk))
    for k in args.k:
        cases[f"knn k={k}"] = ("knn", knn_shape, lambda k=k: knn_predict(
            bank, bank_labels, queries, k=k, num_classes=args.knn_classes, chunk_size=chunk))
    if args.sort_baseline:
        cases["knn matmul + full sort"] = ("knn", knn_shape, lambda: chunked_matmul(queries, bank, chunk, sort=True))
    cases["retrieval matmul"] = ("retrieval", ret_shape, lambda: chunked_matmul(items, items, chunk))
    cases["retrieval rank-1/5 + mAP"] = ("retrieval", ret_shape, lambda: retrieval_metrics(
        items, item_labels, chunk_size=chunk))
    if args.sort_baseline:
        cases["retrieval matmul + full sort"] = ("retrieval", ret_shape,
                                                 lambda: chunked_matmul(items, items, chunk, sort=True))

    if args.only in (None, "embed"):
        cases.update(embed_cases(args, device))
    if args.only:
        cases = {name: case for name, case in cases.items() if case[0] == args.only}
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    with torch.no_grad():
        for rep in range(args.repeats + 1):  # rep 0 warms up (allocator, BLAS, CUDA kernels)
            for name, (_, _, fn) in cases.items():
                w, c = timed(fn, device)
                if rep:
                    wall[name].append(w)
                    cpu[name].append(c)
                    print(f"run {rep}: {name:30s} {w:8.3f} s wall {c:8.3f} s CPU", flush=True)

    reference: dict[str, str] = {}  # the first case of each group
    for name, (group, _, _) in cases.items():
        reference.setdefault(group, name)
    rows = []
    for name, (group, shape, _) in cases.items():
        ref = reference[group]
        row = {"case": name, "group": group, "shape": shape}
        for clock, times in (("", wall), ("cpu_", cpu)):
            median = statistics.median(times[name])
            row |= {f"{clock}median_s": median, f"{clock}runs_s": times[name],
                    f"{clock}ratio_to_matmul": round(median / statistics.median(times[ref]), 3)}
        row["reference"] = ref
        rows.append(row)
    info = {"machine": machine_info(), "device": str(device), "chunk_size": chunk, "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "command": command_line("python benchmarks/eval_speed.py", argv), "results": rows}
    write_report(markdown(info), info, markdown=args.markdown, json_path=args.json)
    return 0


def markdown(info: dict) -> str:
    on_cpu = info["device"] == "cpu"
    lines = [f"Median of {info['repeats']} runs after a warm-up, on `{info['device']}` with {info['threads']} CPU "
             f"thread(s), chunks of {info['chunk_size']} queries; ratio = time / the plain chunked similarity matmul "
             "of the same shapes (embed: / the plain timm forward loop over the same DataLoader)."
             + (" CPU time is this process's, less disturbed than wall time by other load on a shared machine."
                if on_cpu else ""), "",
             "| case | shapes | wall (s) | vs reference |" + (" CPU (s) | vs reference (CPU) |" if on_cpu else ""),
             "|---|---|---|---|" + ("---|---|" if on_cpu else "")]
    for r in info["results"]:
        line = f"| {r['case']} | {r['shape']} | {r['median_s']:.3f} | {r['ratio_to_matmul']:.2f}x |"
        if on_cpu:
            line += f" {r['cpu_median_s']:.3f} | {r['cpu_ratio_to_matmul']:.2f}x |"
        lines.append(line)
    lines += ["", machine_line(info["machine"]), "", "Command:", "", f"```\n{info['command']}\n```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
