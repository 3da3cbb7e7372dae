"""Training on a busy machine: `onebyone train nin_digits --data digits --epochs 5`, timed with the
threads the training loop chooses (default), with OMP_NUM_THREADS=1, and with OMP_NUM_THREADS=2 (what
torch used before the loop chose), each on a quiet machine and beside one CPU-bound process; interleaved,
each condition twice. The target: the default never more than 10% slower than OMP_NUM_THREADS=1, and no
slower than OMP_NUM_THREADS=2 on a quiet machine.

Run: .venv/bin/python benchmarks/train_threads.py   (about 2 minutes)
"""
import os
import subprocess
import sys
import tempfile
import time

CMD = [sys.executable, "-m", "onebyone", "train", "nin_digits", "--data", "digits", "--epochs", "5", "--quiet"]


def timed(threads, out) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t = time.perf_counter()
    subprocess.run(CMD + ["--out", out], env=env, check=True, capture_output=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("quiet", "one busy process beside"):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "quiet" else None
            try:
                for rep in range(2):
                    for threads in (None, 1, 2):
                        key = (load, "default" if threads is None else f"OMP_NUM_THREADS={threads}")
                        results.setdefault(key, []).append(timed(threads, f"{tmp}/{load[:5]}-{threads}-{rep}"))
            finally:
                if busy:
                    busy.kill()
    for (load, how), ts in results.items():
        print(f"{load:26s} {how:18s} " + ", ".join(f"{t:.1f} s" for t in ts) + f"  (best {min(ts):.1f} s)")
