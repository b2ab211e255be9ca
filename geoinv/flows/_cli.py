"""``geoinv train-flow CONFIG``: train a conditional flow for a prior (registered by geoinv.cli)."""

from __future__ import annotations

import argparse


def train_flow_cmd(args: argparse.Namespace) -> int:
    """Train an amortized posterior flow from a YAML config (resumes from its last checkpoint)."""
    from geoinv.flows._train import train_flow

    res = train_flow(args.config, out_dir=args.out, resume=not args.no_resume, progress=not args.no_progress,
                     max_steps=args.max_steps)
    st = res.stats
    last = next((h for h in reversed(st["history"]) if "psnr_mean" in h), {})
    dist = st.get("distill")
    dlast = next((h for h in reversed(dist["history"]) if "psnr_student" in h), {}) if dist else {}
    print(f"saved {res.path}.safetensors/.json: {st['train_steps']} steps in {st['wall_time_s']:.0f} s"
          + (f"; validation PSNR (K=64 mean) {last['psnr_mean']:.2f} dB, untrained base {last['psnr_base']:.2f} dB"
             if last else "")
          + (f"; distilled student {dist['steps']} steps in {dist['wall_time_s']:.0f} s, its base "
             f"{dlast['psnr_student']:.2f} dB vs teacher {dlast['psnr_teacher']:.2f} dB" if dlast else ""))
    return 0


def add_parser(subparsers) -> None:
    t = subparsers.add_parser("train-flow", help="train an amortized posterior flow from configs/<name>.yaml",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from geoinv.cli import training_arguments

    training_arguments(t)
    t.set_defaults(func=train_flow_cmd)
