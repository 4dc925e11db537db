"""Image classifiers side by side: PyTorch eager, raw onnxruntime, Predictor, and int8.

Two CNNs, each exported with :func:`onnxedge.export.export_classifier` (head and
``Rescale`` preprocessing in the graph):

- ``cnn-digits``: onnxedge's own CNN (``--arch cnn``) on scikit-learn's digits as
  1x8x8 images, trained here for a few epochs;
- ``lenet-28``: a LeNet-sized net defined here as a user would (two 5x5 convs,
  28x28 input: the digits upsampled 3x and padded), trained for a few epochs so that
  its labels, and the int8 agreement, mean something.

For each model, at 1 and 2 intra-op threads, one run measures interleaved round by
round (the order of the paths rotates each round):

- batch-1 latency p50 of PyTorch eager (the module and its softmax under
  ``inference_mode``), raw ``session.run`` and ``Predictor.predict``;
- throughput at batch 256 of the same three and of the static int8 variant
  (:func:`onnxedge.export.variants.onnx_to_int8`, static QDQ calibrated on 256 rows),
  raw ``session.run``;
- int8 label agreement with fp32 on all rows.

Ratios are taken inside a round, then the median over rounds is reported.

Usage: ``python -m benchmarks.bench_cnn [--quick] [--out FILE]``; writes
``benchmarks/results_cnn.md`` and ``benchmarks/results_cnn.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import freeze_heap, machine_facts, rotated, settle, spread
from benchmarks.paths import _ort_path, _predictor_path

HERE = Path(__file__).resolve().parent
THREADS = (1, 2)
BATCH = 256
EPOCHS = 8
#: Goals of the CNN issue.
GOAL_PREDICTOR_VS_ORT = 0.95
GOAL_INT8_SPEEDUP = 1.3
GOAL_INT8_AGREEMENT = 0.995


def digits_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits as raw 0..16 images ``(n, 1, size, size)`` float32 and labels ``(n,)``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = data.images.astype(np.float32)  # (n, 8, 8)
    if size != 8:
        scale = size // 8
        images = np.kron(images, np.ones((scale, scale), dtype=np.float32))
        before = (size - 8 * scale) // 2
        after = size - 8 * scale - before
        images = np.pad(images, ((0, 0), (before, after), (before, after)))
    return images[:, None], data.target.astype(np.int64)


def lenet() -> Any:
    """A LeNet-sized classifier for 1x28x28 input, written as a user would."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120),
        nn.ReLU(),
        nn.Linear(120, 10),
    )


def fit(module: Any, x: np.ndarray, y: np.ndarray, scale: float, epochs: int) -> Any:
    """A few epochs of Adam on ``x * scale``; returns the module in eval mode."""
    import torch

    torch.manual_seed(0)
    xs, ys = torch.from_numpy(x * np.float32(scale)), torch.from_numpy(y)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    module.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xs)).split(64):
            optimizer.zero_grad()
            loss_fn(module(xs[idx]), ys[idx]).backward()
            optimizer.step()
    return module.eval()


def build_models(workdir: Path, epochs: int) -> list[dict[str, Any]]:
    """Train and export both CNNs and their int8 variants."""
    import onnx
    from onnxedge.export import Rescale, export_classifier
    from onnxedge.export.variants import choose_int8_settings, onnx_to_int8
    from onnxedge.models import CNN, NetConfig
    from onnxedge.models.nets import DEFAULT_CHANNELS, DEFAULT_HIDDEN

    models = []
    for name, module, size in (("cnn-digits", None, 8), ("lenet-28", lenet(), 28)):
        x, y = digits_images(size)
        if module is None:
            config = NetConfig(
                "multiclass",
                64,
                DEFAULT_HIDDEN,
                10,
                arch="cnn",
                input_shape=(1, 8, 8),
                channels=DEFAULT_CHANNELS,
            )
            module = CNN(config)
        fit(module, x, y, 1 / 16, epochs)
        path = workdir / f"{name}.onnx"
        start = time.perf_counter()
        export_classifier(
            module,
            path,
            input_shape=(1, size, size),
            preprocess=Rescale(1 / 16),
            verify_data=(x, y),
        )
        export_s = time.perf_counter() - start
        int8 = workdir / f"{name}.int8.onnx"
        # Static QDQ, calibrated on 256 rows (the variant make_variant builds from a run).
        settings = choose_int8_settings("static")
        onnx.save(onnx_to_int8(onnx.load(path), settings, calibration=x[:256]), int8)
        models.append(
            {
                "name": name,
                "module": module,
                "x": x,
                "y": y,
                "fp32": path,
                "int8": int8,
                "export_s": export_s,
                "size": size,
            }
        )
    return models


def torch_run(module: Any, threads: int) -> Any:
    """PyTorch eager: the module and its softmax, as the exported graph computes them."""
    import torch

    def run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            logits = module(torch.from_numpy(x) * (1 / 16))
            return torch.softmax(logits, 1).numpy(), logits.argmax(1).numpy()

    def enter() -> None:
        torch.set_num_threads(threads)

    return run, enter


def measure(model: dict[str, Any], threads: int, rounds: int, min_s: float) -> dict[str, Any]:
    """Latency at batch 1 and throughput at BATCH for every path, interleaved."""
    torch_fn, torch_enter = torch_run(model["module"], threads)
    paths: dict[str, Any] = {
        "torch": torch_fn,
        "ort": _ort_path(model["fp32"], threads),
        "predictor": _predictor_path(model["fp32"], threads).__call__,
        "ort-int8": _ort_path(model["int8"], threads),
    }
    x1 = np.ascontiguousarray(model["x"][:1])
    xb = np.ascontiguousarray(np.resize(model["x"], (BATCH, *model["x"].shape[1:])))
    for run in paths.values():
        torch_enter()
        for _ in range(50):
            run(x1)
        run(xb)
    p50: dict[str, list[float]] = {name: [] for name in paths}
    rate: dict[str, list[float]] = {name: [] for name in paths}
    clock = time.perf_counter
    for r in range(rounds):
        for name in rotated(list(paths), r):
            run = paths[name]
            torch_enter()
            calls = [0.0] * 300
            for i in range(len(calls)):
                start = clock()
                run(x1)
                calls[i] = clock() - start
            p50[name].append(float(np.median(calls)) * 1e6)
            settle()
            n, start = 0, clock()
            while n < 3 or clock() - start < min_s:
                run(xb)
                n += 1
            rate[name].append(n * BATCH / (clock() - start))
            settle()
    ratio = {
        "predictor_vs_ort_b1": [o / p for o, p in zip(p50["ort"], p50["predictor"], strict=True)],
        "predictor_vs_ort_b256": [
            p / o for p, o in zip(rate["predictor"], rate["ort"], strict=True)
        ],
        "ort_vs_torch_b1": [t / o for t, o in zip(p50["torch"], p50["ort"], strict=True)],
        "ort_vs_torch_b256": [o / t for o, t in zip(rate["ort"], rate["torch"], strict=True)],
        "int8_vs_fp32_b256": [i / o for i, o in zip(rate["ort-int8"], rate["ort"], strict=True)],
    }
    return {
        "p50_us": {name: spread(v) for name, v in p50.items()},
        "rows_per_s": {name: spread(v) for name, v in rate.items()},
        "ratios": {name: spread(v) for name, v in ratio.items()},
    }


def agreement(model: dict[str, Any]) -> float:
    """Share of rows whose int8 label equals the fp32 label (onnxruntime, all rows)."""
    labels = [
        _ort_path(model[variant], 1)(np.ascontiguousarray(model["x"]))[1]
        for variant in ("fp32", "int8")
    ]
    return float(np.mean(labels[0] == labels[1]))


def render(results: dict[str, Any]) -> str:
    """The markdown report."""
    lines = [
        "# CNN benchmark",
        "",
        f"Written by `python -m benchmarks.bench_cnn` on {results['date']}, commit "
        f"{results['machine'].get('git_commit')}, in {results['seconds']:.0f} s. Batch-1 figures "
        f"are medians of 300 calls per round; batch-{BATCH} figures are rows/s per round; "
        "ratios are taken inside each round, then the median (min-max) over rounds is shown.",
        "",
        "| model | threads | goal | target | measured (range) | status |",
        "|---|---|---|---|---|---|",
    ]
    goals = [
        ("Predictor vs raw ORT, batch 1", "predictor_vs_ort_b1", GOAL_PREDICTOR_VS_ORT),
        (f"Predictor vs raw ORT, batch {BATCH}", "predictor_vs_ort_b256", GOAL_PREDICTOR_VS_ORT),
        (f"int8 vs fp32 (raw ORT), batch {BATCH}", "int8_vs_fp32_b256", GOAL_INT8_SPEEDUP),
        ("raw ORT ahead of PyTorch eager, batch 1", "ort_vs_torch_b1", 1.0),
        (f"raw ORT ahead of PyTorch eager, batch {BATCH}", "ort_vs_torch_b256", 1.0),
    ]
    for model in results["models"]:
        for threads, block in model["threads"].items():
            for label, key, target in goals:
                got = block["ratios"][key]
                status = "met" if got["median"] >= target else "**missed**"
                lines.append(
                    f"| {model['name']} | {threads} | {label} | >= {target:.2f}x | "
                    f"{got['median']:.3f}x ({got['min']:.2f}-{got['max']:.2f}) | {status} |"
                )
        status = "met" if model["int8_agreement"] >= GOAL_INT8_AGREEMENT else "**missed**"
        lines.append(
            f"| {model['name']} |  | int8 label agreement with fp32 | >= "
            f"{GOAL_INT8_AGREEMENT:.3f} | {model['int8_agreement']:.4f} | {status} |"
        )
    lines += [
        "",
        f"| model | threads | path | batch-1 p50 (us) | batch-{BATCH} rows/s |",
        "|---|---|---|---|---|",
    ]
    for model in results["models"]:
        for threads, block in model["threads"].items():
            for name in block["p50_us"]:
                lines.append(
                    f"| {model['name']} | {threads} | {name} | "
                    f"{block['p50_us'][name]['median']:.1f} | "
                    f"{block['rows_per_s'][name]['median']:,.0f} |"
                )
    facts = results["machine"]
    ort = facts.get("versions", {}).get("onnxruntime")
    cpu = f"{facts.get('cpu_model', '?')}, {facts.get('cpus', '?')} CPUs, onnxruntime {ort}"
    lines += [
        "",
        f"Machine: {cpu}; export time: "
        + ", ".join(f"{m['name']} {m['export_s']:.1f} s" for m in results["models"])
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, short blocks (smoke)")
    parser.add_argument("--out", type=Path, default=HERE / "results_cnn.md")
    args = parser.parse_args(argv)
    rounds, min_s, epochs = (2, 0.05, 1) if args.quick else (7, 0.3, EPOCHS)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp), epochs)
        freeze_heap()
        out = []
        for model in models:
            out.append(
                {
                    "name": model["name"],
                    "export_s": model["export_s"],
                    "int8_agreement": agreement(model),
                    "threads": {str(t): measure(model, t, rounds, min_s) for t in THREADS},
                }
            )
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "seconds": time.perf_counter() - began,
        "machine": machine_facts(),
        "models": out,
    }
    args.out.write_text(render(results))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
