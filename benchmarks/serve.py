"""How fast a trained model answers: `/predict` latency over loopback, and batch predict throughput.

    OMP_NUM_THREADS=1 python benchmarks/serve.py [--requests 400] [--checkpoint lean-8k=RUN/best.pt ...]
                                                 [--json docs/benchmarks/serve.json]

For lean-8k and seed-regularized, each with PyTorch (the checkpoint) and onnxruntime (its
`mnist-ops export`):
1. Starts `mnist-ops serve --port 0` in a subprocess and sends a bounded number of POST /predict
   requests from this process over 127.0.0.1: first one at a time (concurrency 1), then 8 in flight
   (concurrency 8). Each request is a 280x280 PNG of an MNIST test digit drawn dark on white, as
   the draw page sends it. Latency is measured by the client, from sending to the parsed JSON.
2. In-process throughput of `Predictor.probabilities` on the 10,000 test images (already 28x28)
   in batches of 1, 64 and 1,000, and of the full path (`predict_many`: preprocessing + model).

Without --checkpoint, each preset trains one epoch on 2,000 images first: latency does not depend
on how well the weights are trained. The client shares the machine with the server, so the
latencies include its own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from mnist_ops.provenance import code_version
from mnist_ops.data import load_split
from mnist_ops.export import export_onnx
from mnist_ops.fileio import atomic_write_bytes
from mnist_ops.predict import OnnxPredictor, TorchPredictor
from mnist_ops.presets import build_config
from mnist_ops.train import fit

PRESETS = ("lean-8k", "seed-regularized")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def drawn_digits(count: int = 50) -> list[bytes]:
    """The first `count` test digits as the draw page posts them: 280x280 PNG, dark on white."""
    images = load_split("mnist", "test").images[:count].numpy()
    bodies = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(255 - pixels).resize((280, 280), Image.Resampling.BICUBIC).save(buffer, "PNG")
        bodies.append(buffer.getvalue())
    return bodies


def start_server(flag: str, path: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "mnist_ops", "serve", flag, str(path), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = process.stdout.readline()
    if not line.startswith("serving "):
        process.kill()
        raise SystemExit(f"server did not start: {line!r}")
    url = line.split(" on ")[1].split()[0].rstrip("/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("server never answered /healthz")


async def measure(url: str, bodies: list[bytes], requests: int, concurrency: int) -> dict:
    """`requests` POSTs with `concurrency` in flight; per-request latency in ms."""
    latencies: list[float] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
        async def worker():
            for index in counter:
                started = time.perf_counter()
                response = await client.post("/predict", content=bodies[index % len(bodies)],
                                             headers={"content-type": "image/png"})
                response.json()
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"/predict answered {response.status_code}: {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {"requests": requests, "concurrency": concurrency, "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "requests_per_second": round(requests / seconds, 1)}


def serve_latency(flag: str, path: Path, bodies: list[bytes], requests: int) -> list[dict]:
    process, url = start_server(flag, path)
    try:
        asyncio.run(measure(url, bodies, 50, 1))  # warm-up: first calls allocate and load kernels
        return [asyncio.run(measure(url, bodies, requests, concurrency)) for concurrency in (1, 8)]
    finally:
        process.terminate()
        process.wait(15)


def throughput(predictor, pixels: np.ndarray) -> dict:
    """Images per second of the model alone (batches of 1, 64, 1000) and of the whole path."""
    result = {}
    for batch_size in (1, 64, 1000):
        predictor.probabilities(pixels[:batch_size * 2], batch_size)  # warm-up
        started = time.perf_counter()
        predictor.probabilities(pixels, batch_size)
        result[f"model_batch_{batch_size}_img_per_s"] = round(len(pixels) / (time.perf_counter() - started), 1)
    images = [(str(i), Image.fromarray(p)) for i, p in enumerate(pixels)]
    started = time.perf_counter()
    count = sum(1 for _ in predictor.predict_many(images, batch_size=256))
    result["preprocess_and_model_img_per_s"] = round(count / (time.perf_counter() - started), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement (default 400)")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="PRESET=PATH",
                        help="use this checkpoint instead of a one-epoch run (repeatable)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.checkpoint)

    bodies = drawn_digits()
    pixels = load_split("mnist", "test").images.numpy()
    results = {"code_version": code_version(), "machine": f"{os.cpu_count()} CPUs, {platform.processor() or '?'}",
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"), "requests": args.requests,
               "payload": "280x280 PNG of an MNIST test digit, dark on white", "models": {}}
    with tempfile.TemporaryDirectory() as temp:
        for preset in PRESETS:
            checkpoint = Path(given[preset]) if preset in given else None
            if checkpoint is None:
                config = build_config(preset, None, {"epochs": 1, "limit_train": 2000})
                fit(config, Path(temp) / preset, log=lambda line: None, progress=False)
                checkpoint = Path(temp) / preset / "last.pt"
            model = Path(temp) / f"{preset}.onnx"
            export_onnx(checkpoint, model)
            entry = results["models"][preset] = {"checkpoint": str(checkpoint) if preset in given else
                                                 "1 epoch on 2,000 images (weights do not change the timing)"}
            for backend, flag, path, predictor in (("torch", "--checkpoint", checkpoint, TorchPredictor(checkpoint)),
                                                   ("onnxruntime", "--model", model, OnnxPredictor(model))):
                latency = serve_latency(flag, path, bodies, args.requests)
                entry[backend] = {"serve": latency, "predict": throughput(predictor, pixels)}
                for row in latency:
                    print(f"{preset:<17} {backend:<11} concurrency {row['concurrency']}: p50 {row['p50_ms']:6.2f} ms  "
                          f"p99 {row['p99_ms']:6.2f} ms  {row['requests_per_second']:7.1f} req/s", flush=True)
                print(f"{preset:<17} {backend:<11} predict: " + ", ".join(
                    f"{key} {value:,.0f}" for key, value in entry[backend]["predict"].items()), flush=True)
    for preset, entry in results["models"].items():
        ratio = entry["onnxruntime"]["predict"]["model_batch_1_img_per_s"] / \
            entry["torch"]["predict"]["model_batch_1_img_per_s"]
        entry["onnxruntime_over_torch_batch_1"] = round(ratio, 2)
        print(f"{preset}: onnxruntime / torch at batch 1 = {ratio:.2f}x")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(results, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
