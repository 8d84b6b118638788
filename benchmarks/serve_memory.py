"""Peak memory of `mnist-ops serve` under concurrent uploads of a large picture (DECODE_SLOTS in serve/app.py).

    python benchmarks/serve_memory.py --checkpoint RUN [--concurrent 8]

Starts the server on a free loopback port, sends one 4096x4096 RGBA PNG (about 70 KB: a transparent page with
one black stroke), then --concurrent of them at once, and prints the server's peak resident memory (VmHWM in
/proc/PID/status, Linux) when idle, after the one, and after the batch. Stops the server.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image


def peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--concurrent", type=int, default=8)
    args = parser.parse_args()
    image = Image.new("RGBA", (4096, 4096), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (1900, 800, 2200, 3300))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    large = buffer.getvalue()
    server = subprocess.Popen([sys.executable, "-m", "mnist_ops", "serve", "--checkpoint", args.checkpoint,
                               "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().split(" on ")[1].split()[0].rstrip("/")
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        idle = peak_mb(server.pid)
        assert httpx.post(f"{url}/predict", content=large, timeout=120).status_code == 200
        one = peak_mb(server.pid)
        start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrent) as pool:
            codes = list(pool.map(lambda _: httpx.post(f"{url}/predict", content=large, timeout=300).status_code,
                                  range(args.concurrent)))
        seconds = time.perf_counter() - start
        print(f"upload {len(large):,} bytes; peak RSS: idle {idle:,.0f} MB, after one {one:,.0f} MB, after "
              f"{args.concurrent} at once {peak_mb(server.pid):,.0f} MB ({seconds:.1f} s; statuses {sorted(set(codes))})")
    finally:
        server.terminate()
        server.wait(15)


if __name__ == "__main__":
    main()
