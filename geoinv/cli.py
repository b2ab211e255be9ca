"""The ``geoinv`` command line: ``demo``, ``bench``, ``train``.

Subcommands import what they need when they run, so ``geoinv --help`` is quick.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("geoinv")

#: modules with ``add_parser(subparsers)``; they must import heavy packages only inside their commands
_EXTENSIONS = ("geoinv.flows._cli", "geoinv.climate._cli", "geoinv.fluids._cli")


def _table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    widths = [max(len(h), *(len(format(r[k], f)) for r in rows)) for k, h, f in cols]
    line = "  ".join(h.ljust(w) for (_, h, _), w in zip(cols, widths))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(format(r[k], f).ljust(w) for (k, _, f), w in zip(cols, widths)))
    return "\n".join(out)


def _write_json(path: Path, payload: dict) -> None:
    from geoinv.io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(payload, indent=1, default=float).encode())


def demo(args: argparse.Namespace) -> int:
    """Bunny-MNIST inpainting of held-out digits with every available method, rendered to PNGs."""
    from geoinv import viz
    from geoinv.bench import _bunny
    from geoinv.bench._common import run_methods

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth, observed, mask = _bunny.make_case(args.n, args.missing, seed=args.seed)
    print(f"Bunny-MNIST: {args.n} held-out digits on the 1,889-vertex Stanford bunny, "
          f"{args.missing:.0%} of vertices missing, noise std {_bunny.NOISE_STD}")
    gp = _bunny.fitted_gaussian()
    methods = [("harmonic", {}), ("gaussian", {"prior": gp})]
    if not args.classical_only:
        methods += _bunny.learned_methods()
    posts: dict = {}
    rows = run_methods(truth, observed, mask, methods=methods, noise_std=_bunny.NOISE_STD, data_range=1.0,
                       seed=args.seed, progress=not args.no_progress, posteriors=posts)
    print(_table(rows, [("method", "method", ""), ("psnr", "PSNR [dB]", ".2f"), ("s_per_signal", "s/digit", ".2f"),
                        ("nfe", "NFE/digit", ".0f"), ("n_forward", "forward/digit", ".0f")]))
    cam = viz.painted_camera(truth.vertices.numpy(), aspect=380 / 400, fill=0.95)  # digits read upright
    # uncertainty of the sampler and of the amortized flow side by side (the Gaussian's without them)
    std_from = [n for n in ("dps", "flow") if n in posts and posts[n].std is not None]
    std_from = std_from or [n for n in ("gaussian",) if n in posts and posts[n].std is not None]
    pngs = []
    for i in range(args.n):
        panels = {"truth": truth.point_values()[i, :, 0], "observed": observed.point_values()[i, :, 0]}
        for name, post in posts.items():
            panels[name] = post.mean.point_values()[i, :, 0]
        for name in std_from:
            panels[f"{name} std"] = posts[name].std.point_values()[i, :, 0]
        k = len(panels)
        p = viz.render_mesh_panels(truth, panels, out / f"bunny_mnist_{i}.png", camera=cam, cmap="viridis", clim=(0.0, 1.0))
        pngs.append(str(p))
        log.info("wrote %s (%d panels)", p, k)
    summary = {"task": "bunny-mnist inpainting", "missing": args.missing, "noise_std": _bunny.NOISE_STD,
               "n_digits": args.n, "rows": rows, "pictures": pngs, "seconds": time.perf_counter() - t0}
    _write_json(out / "metrics.json", summary)
    print(f"wrote {len(pngs)} pictures and metrics.json to {out}/ in {summary['seconds']:.0f} s")
    return 0


def bench(args: argparse.Namespace) -> int:
    """Run one benchmark task and write its section of docs/benchmarks.md."""
    from geoinv import bench as b

    payload = b.run(args.task, out=args.out, quick=args.quick, n_test=args.n, seed=args.seed,
                    progress=not args.no_progress)
    print(Path(args.out).read_text().split(f"<!-- bench:{args.task} -->")[1].split("<!-- /bench")[0].strip())
    return 0 if payload["rows"] else 1


def train(args: argparse.Namespace) -> int:
    """Train a diffusion prior from a YAML config (resumes from its last checkpoint)."""
    from geoinv import training

    training.train(args.config, out_dir=args.out, resume=not args.no_resume, progress=not args.no_progress,
                   max_steps=args.max_steps)
    return 0


def training_arguments(t: argparse.ArgumentParser) -> None:
    """The options every training command shares (``train``, ``train-flow``)."""
    t.add_argument("config")
    t.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    t.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geoinv", description="Inverse problems on meshes, spheres and grids.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="Bunny-MNIST inpainting with every available method; writes PNGs + metrics.json",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--out", default="geoinv-demo", help="output folder")
    d.add_argument("--n", type=int, default=3, help="number of held-out digits")
    d.add_argument("--missing", type=float, default=0.3, help="fraction of vertices missing")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--classical-only", action="store_true", help="only harmonic and Gaussian")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=demo)

    b = sub.add_parser("bench", help="reproduce a section of docs/benchmarks.md",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("task", help="bunny-mnist | prior | sphere | climate | navier-stokes | navier-stokes-10 | "
                                "navier-stokes-128")
    b.add_argument("--out", default="docs/benchmarks.md")
    b.add_argument("--quick", action="store_true", help="fewer test signals (smoke run; not for the docs)")
    b.add_argument("--n", type=int, default=None, help="number of test signals")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=bench)

    t = sub.add_parser("train", help="train a diffusion prior from configs/<name>.yaml",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    training_arguments(t)
    t.set_defaults(func=train)

    # workflow subcommands (impute, datasets, train-flow, ...) register themselves
    for mod in _EXTENSIONS:
        try:
            importlib.import_module(mod).add_parser(sub)
        except ModuleNotFoundError:
            pass
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
