"""Per-step figures from a Perfetto trace that ``profile_finetune_step.py --trace`` wrote: for each
GPU, steps are delimited by the gradient all-reduce's last NCCL kernel; per step, the kernel count,
the kernels' busy time, the step's span, and on the host the time in cuGraphLaunch and the whole
jitted call. Where the span exceeds the busy time the device waited for the host.

    python experiments/trace_summary.py results/trace_finetune_step_h200x2_2026-11-22_d.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics


def summary(path: str) -> dict:
    events = json.load(gzip.open(path))["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] == "process_name"}
    spans = [e for e in events if e.get("ph") == "X"]
    out = {}
    for pid, name in sorted(processes.items()):
        if "GPU" not in name:
            continue
        kernels = sorted((e for e in spans if e["pid"] == pid), key=lambda e: e["ts"])
        nccl = [e for e in kernels if e["name"].startswith("ncclDevKernel")]
        # The step's last all-reduce kernel ends each step (the loss's and the gradients').
        ends = [e["ts"] for i, e in enumerate(nccl) if i + 1 == len(nccl) or nccl[i + 1]["ts"] - e["ts"] > 2000]
        steps = [[k for k in kernels if a <= k["ts"] < b] for a, b in zip(ends, ends[1:])]
        out[name] = {
            "steps": len(steps),
            "kernels_per_step": statistics.median(len(s) for s in steps),
            "busy_ms": statistics.median(sum(k["dur"] for k in s) / 1e3 for s in steps),
            "span_ms": statistics.median((b - a) / 1e3 for a, b in zip(ends, ends[1:])),
        }
    host = [e for e in spans if processes.get(e["pid"], "").startswith("/host")]
    calls = {e["ts"]: e["dur"] / 1e3 for e in host if e["name"].startswith("PjitFunction")}  # nested twins share ts
    launches = sum(e["dur"] for e in host if e["name"].startswith("cuGraphLaunch")) / 1e3
    out["host"] = {"jitted_call_ms_median": statistics.median(calls.values()) if calls else None,
                   "cuGraphLaunch_ms_per_call_all_devices": launches / max(1, len(calls))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("traces", nargs="+")
    for path in parser.parse_args().traces:
        print(path, json.dumps(summary(path), indent=1))


if __name__ == "__main__":
    main()
