"""The PNG chart of a run (matplotlib, when installed; otherwise the chart is skipped)."""

from __future__ import annotations

from pathlib import Path

from bench.report import Row

__all__ = ["PANELS", "write_chart"]

PANELS = (
    ("receive", "rate", "receive firehose (msg/s, higher is better)"),
    ("send", "rate", "pipelined send (msg/s, higher is better)"),
    ("echo", "cpu_us", "echo: client CPU per round trip (us, lower is better)"),
    ("echo", "p50_us", "echo: p50 round trip (us, lower is better)"),
    ("memory", "kib", "memory per idle connection (KiB, lower is better)"),
)
"""(workload, metric, title) of each panel."""


def write_chart(path: Path, rows: list[Row], title: str) -> str | None:
    """Draw one horizontal bar panel per workload; returns why not, when it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return "matplotlib is not installed (pip install -r bench/requirements.txt)"
    panels = [
        (workload, metric, heading, picked)
        for workload, metric, heading in PANELS
        if (picked := [r for r in rows if r.case.workload == workload and metric in r.stats])
    ]
    if not panels:
        return "no row to draw"
    height = sum(1.0 + 0.32 * len(picked) for *_, picked in panels)
    figure, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9, max(3.0, height)),
        gridspec_kw={"height_ratios": [len(p[3]) + 1 for p in panels]},
        squeeze=False,
    )
    for ax, (_, metric, heading, picked) in zip(axes[:, 0], panels, strict=True):
        labels = [r.case.label + (" [uvloop]" if r.case.loop == "uvloop" else "") for r in picked]
        medians = [r.stats[metric].median for r in picked]
        low = [m - r.stats[metric].low for m, r in zip(medians, picked, strict=True)]
        high = [r.stats[metric].high - m for m, r in zip(medians, picked, strict=True)]
        colours = ["tab:blue" if r.case.client == "bgws" else "tab:gray" for r in picked]
        positions = list(range(len(picked)))
        ax.barh(positions, medians, xerr=[low, high], color=colours, capsize=3)
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()
        ax.set_title(heading, fontsize=10, loc="left")
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda x, _: f"{x:,.0f}" if x >= 10 else f"{x:g}")
        )
        for y, value, row in zip(positions, medians, picked, strict=True):
            text = f" {value:,.0f}" if value >= 100 else f" {value:,.1f}"
            ax.text(row.stats[metric].high, y, text, va="center", fontsize=7)
        ax.margins(x=0.12)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None
