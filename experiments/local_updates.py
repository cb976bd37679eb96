"""Issue 18: local updates against global backprop (Laskin et al. 2020, *Parallel Training of
Deep Networks with Local Updates*), for the in-context transformer.

    metalearn sweep local_updates --out sweeps/local_updates
    python -m metalearn.experiments.local_updates sweeps/local_updates   # figure and table

An 8-layer transformer (width 64, 4 heads, token shift) meta-trained on linear regression in
context (8-d inputs, noise 0.5, sequences of 16) by global backprop and by local updates in
2, 4 and 8 stages (`model.local_blocks`; icl/local.py), the 4- and 8-stage ones also with one
layer of overlap (`model.local_overlap=1`). Each stage has its own readout and loss and no
gradient crosses a stage boundary, so on K devices the stages update in parallel: the work on
the critical path of a step is about 1/K of its total (`bench local` measures the pipelined
step). The figure puts each run's loss (the last stage's readout, the model's prediction)
against its total training FLOPs and against that critical-path share.
docs/studies/local_updates.md has the measured run and the device-scaling table.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from metalearn.core.errors import UserError
from metalearn.experiments.icl_study import TRAIN, EvalConfig, ICLConfig
from metalearn.icl.learner import ModelConfig
from metalearn.meta.experiment import Setup
from metalearn.meta.loop import LoopConfig
from metalearn.meta.optim import OptimConfig

BASE = ModelConfig(depth=8, width=64, heads=4)
# name -> (local blocks, overlap); "global" is ordinary backprop through all 8 layers
VARIANTS: dict[str, tuple[int, int]] = {
    "global": (1, 0),
    "local2": (2, 0),
    "local4": (4, 0),
    "local8": (8, 0),
    "local4_overlap1": (4, 1),
    "local8_overlap1": (8, 1),
}


@dataclasses.dataclass(frozen=True)
class Config(ICLConfig):
    family: str = "linear_regression:dim=8,noise=0.5"
    length: int = 16
    batch_size: int = 64
    model: ModelConfig = BASE
    optim: OptimConfig = OptimConfig(lr=1e-3, warmup=100)
    loop: LoopConfig = LoopConfig(steps=3000, log_every=25, eval_every=0, checkpoint_every=1000)
    eval: EvalConfig = EvalConfig(
        families=(TRAIN,),
        baselines=("least_squares",),
        budgets=(0, 2, 4, 8, 12, 15),
        sequences=500,
    )
    # one of VARIANTS, setting model.local_blocks and model.local_overlap; empty: as given
    variant: str = ""

    def setup(self) -> Setup:
        if not self.variant:
            return super().setup()
        if self.variant not in VARIANTS:
            raise UserError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        blocks, overlap = VARIANTS[self.variant]
        model = dataclasses.replace(self.model, local_blocks=blocks, local_overlap=overlap)
        return dataclasses.replace(self, model=model, variant="").setup()


SWEEP = {"grid": {"variant": list(VARIANTS)}, "seeds": 1}


def compute_curves(sweep_dir: str | Path) -> list[dict]:
    """Per point: its variant, stages, and logged (step, loss) with the FLOPs spent by then,
    in total and on the critical path when each stage has its own device."""
    from metalearn.meta.logs import read_metrics

    sweep_dir = Path(sweep_dir)
    rows = []
    for point in sorted((sweep_dir / "points").iterdir()):
        status_file = point / "status.json"
        config_file = point / "config.json"
        if not status_file.exists() or not config_file.exists():
            continue
        status = json.loads(status_file.read_text())
        if status.get("status") != "done" or not status.get("train_flops"):
            continue
        config = json.loads(config_file.read_text())["config"]
        variant = config.get("variant") or "global"
        blocks = VARIANTS[variant][0]
        per_step = status["train_flops"] / config["loop"]["steps"]
        log = [r for r in read_metrics(point / "metrics.jsonl") if "loss" in r]
        rows.append(
            dict(
                variant=variant,
                stages=blocks,
                steps=[r["step"] for r in log],
                loss=[r["loss"] for r in log],
                flops=[r["step"] * per_step for r in log],
                critical_flops=[r["step"] * per_step / blocks for r in log],
                wall_s=status.get("wall_s"),
            )
        )
    if not rows:
        raise UserError(f"no finished points with training FLOPs under {str(sweep_dir)!r}")
    return rows


def figure(sweep_dir: str | Path, smooth: int = 4) -> Path:
    """Write DIR/loss_vs_compute.png: loss against total and critical-path training FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from metalearn.core.files import atomic_write

    rows = compute_curves(sweep_dir)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for row in rows:
        loss = np.convolve(row["loss"], np.ones(smooth) / smooth, mode="valid")
        style = "--" if "overlap" in row["variant"] else "-"
        for ax, key in zip(axes, ("flops", "critical_flops"), strict=True):
            x = np.asarray(row[key])[smooth - 1 :]
            ax.plot(x, loss, style, label=row["variant"])
    for ax, title in zip(
        axes,
        ("total training FLOPs", "FLOPs on the critical path (one device per stage)"),
        strict=True,
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"training loss (MSE, running mean of {smooth} logs)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    out = Path(sweep_dir) / "loss_vs_compute.png"
    atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)
    return out


def summary(sweep_dir: str | Path, last: int = 8) -> str:
    """One line per point: stages, final loss (mean of the last `last` logs), FLOPs, wall
    time, and global backprop's loss after it had spent the same critical-path FLOPs."""
    rows = compute_curves(sweep_dir)
    glob = next((r for r in rows if r["stages"] == 1), None)

    def loss_at(row: dict, step: float) -> float:
        window = [v for s, v in zip(row["steps"], row["loss"], strict=True) if s <= step][-last:]
        return sum(window) / len(window) if window else float("nan")

    lines = [
        f"{'variant':<18}{'stages':>7}{'final loss':>12}{'GFLOP total':>13}"
        f"{'GFLOP critical':>16}{'global, same critical':>23}{'wall s':>8}"
    ]
    for row in rows:
        final = loss_at(row, row["steps"][-1])
        # global backprop's step at which it had spent this run's critical-path FLOPs
        step = row["critical_flops"][-1] / (glob["flops"][-1] / glob["steps"][-1]) if glob else 0
        same = loss_at(glob, step) if glob else float("nan")
        lines.append(
            f"{row['variant']:<18}{row['stages']:>7}{final:>12.4f}{row['flops'][-1] / 1e9:>13.0f}"
            f"{row['critical_flops'][-1] / 1e9:>16.0f}{same:>23.4f}{row['wall_s'] or 0:>8.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="local updates: figure and table of a sweep")
    parser.add_argument("sweep_dir")
    parser.add_argument("--smooth", type=int, default=4)
    args = parser.parse_args(argv)
    print(summary(args.sweep_dir))
    print(f"wrote {figure(args.sweep_dir, args.smooth)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
