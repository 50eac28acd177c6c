#!/usr/bin/env python3
"""GEMM rate of the machine's libraries at a linear layer's shape, as JSON lines for the benchmarks.

C[m, n] = A[m, k] @ B[n, k]^T (a linear layer with row-major weights), best of --repeats timed runs
(each run loops for at least 0.2 s), with --threads threads, through:
  - numpy (its bundled OpenBLAS), float32;
  - torch, float32 and bfloat16 (bf16 inputs, the library's own accumulation);
  - oneDNN's dnnl_sgemm (Debian's libdnnl.so.2 through ctypes; OMP_NUM_THREADS is set to --threads
    before the library loads), float32; skipped with a note when the library is not installed.
bench/model_bench prints earnserve's own sgemm at the same shape; bench/run_llm_bench.sh takes the
best of all of them as the machine's GEMM roofline.

  .venv/bin/python tools/gemm_roofline.py --shapes 512x896x4864,128x896x4864 --threads 2
"""

import argparse
import ctypes
import ctypes.util
import json
import os
import sys
import time


def best_gflops(fn, flops, repeats):
  fn()  # warm-up
  best = 0.0
  for _ in range(repeats):
    calls, start = 0, time.perf_counter()
    while True:
      fn()
      calls += 1
      elapsed = time.perf_counter() - start
      if elapsed >= 0.2:
        break
    best = max(best, flops * calls / elapsed / 1e9)
  return best


def load_dnnl():
  for name in ("libdnnl.so.3", "libdnnl.so.2", ctypes.util.find_library("dnnl")):
    if not name:
      continue
    try:
      lib = ctypes.CDLL(name)
    except OSError:
      continue
    lib.dnnl_sgemm.restype = ctypes.c_int
    lib.dnnl_sgemm.argtypes = [ctypes.c_char, ctypes.c_char, ctypes.c_int64, ctypes.c_int64,
                               ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p,
                               ctypes.c_int64]
    return name, lib
  return None, None


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default="512x896x4864",
                      help="comma-separated MxKxN (tokens x in_features x out_features)")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--label", default="", help="model name in the JSON lines")
  args = parser.parse_args()
  try:
    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",") if s]
    if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
      raise ValueError
  except ValueError:
    parser.error(f"--shapes must be MxKxN[,MxKxN...] with positive sizes, got {args.shapes!r}")
  if args.threads < 1 or args.repeats < 1:
    parser.error("--threads and --repeats must be >= 1")
  # Before numpy, torch or oneDNN start their thread pools.
  for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)
  import numpy as np
  import torch
  torch.set_num_threads(args.threads)
  dnnl_name, dnnl = load_dnnl()

  for m, k, n in shapes:
    flops = 2.0 * m * k * n
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k), dtype=np.float32)
    c = np.empty((m, n), dtype=np.float32)
    bt = b.T
    runs = [("numpy", "f32", lambda: np.matmul(a, bt, out=c))]
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    tc = torch.empty((m, n))
    runs.append(("torch", "f32", lambda: torch.matmul(ta, tb.t(), out=tc)))
    ha, hb = ta.bfloat16(), tb.bfloat16()
    hc = torch.empty((m, n), dtype=torch.bfloat16)
    runs.append(("torch", "bf16", lambda: torch.matmul(ha, hb.t(), out=hc)))
    if dnnl is not None:
      pa, pb, pc = (x.ctypes.data_as(ctypes.c_void_p) for x in (a, b, c))

      def dnnl_call():
        status = dnnl.dnnl_sgemm(b"N", b"T", m, n, k, 1.0, pa, k, pb, k, 0.0, pc, n)
        if status != 0:
          raise RuntimeError(f"dnnl_sgemm returned status {status}")
      runs.append(("onednn", "f32", dnnl_call))
    for library, dtype, fn in runs:
      line = {"engine": library, "model": args.label, "measure": "gemm", "dtype": dtype,
              "m": m, "k": k, "n": n, "threads": args.threads,
              "gflops": best_gflops(fn, flops, args.repeats)}
      if library == "onednn":
        line["library"] = dnnl_name
      print(json.dumps(line), flush=True)
    if dnnl is None:
      print(json.dumps({"engine": "onednn", "model": args.label, "measure": "gemm",
                        "skipped": "libdnnl.so not found (Debian: apt install libdnnl-dev)"}),
            flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
