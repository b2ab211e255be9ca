"""``geoinv datasets navier-stokes``: generate the fluid data set (train and test splits)."""

from __future__ import annotations

import argparse


def datasets_navier_stokes(args: argparse.Namespace) -> int:
    """Generate train/test vorticity fields with our solver and print where they went."""
    import time

    import torch

    from geoinv.fluids import generate_splits

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    paths = generate_splits(args.n, args.n_test, args.resolution, args.out, progress=not args.no_progress)
    for split, p in paths.items():
        print(f"{split}: {p}")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def _datasets_subparsers(subparsers) -> argparse._SubParsersAction:
    """The ``datasets`` command's own sub-parsers (created once; other modules may add data sets)."""
    parser = subparsers.choices.get("datasets")
    if parser is None:
        parser = subparsers.add_parser("datasets", help="generate or fetch data sets")
    sub = getattr(parser, "_geoinv_datasets", None)
    if sub is None:
        sub = parser.add_subparsers(dest="dataset", required=True)
        parser._geoinv_datasets = sub
    return sub


def add_parser(subparsers) -> None:
    """Register ``geoinv datasets navier-stokes``."""
    from geoinv.fluids._data import DEFAULT_N

    sub = _datasets_subparsers(subparsers)
    p = sub.add_parser("navier-stokes", help="GRF initial vorticity evolved 5 time units at Re 200 (train + test)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=DEFAULT_N["train"], help="number of training fields")
    p.add_argument("--n-test", type=int, default=DEFAULT_N["test"], help="number of test fields (disjoint seed)")
    p.add_argument("--resolution", type=int, default=64, choices=(64, 128))
    p.add_argument("--out", default=None, help="folder (default ~/.cache/geoinv/navier-stokes)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=datasets_navier_stokes)
