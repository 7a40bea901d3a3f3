"""The picture of a run: throughput and peak RSS against body size (PNG, matplotlib); the HTTPS and
the capped-origin scenarios as points at their body's size."""

from __future__ import annotations

from pathlib import Path

from .measure import human_size
from .report import machine_line
from .sweep import BGFETCH, worst_rss
from .targets import RSS_LIMIT_MB

LINES = {  # scenario: (label, style)
    "direct": ("direct curl", "k:"),
    "plain": ("plain mitmdump", "C0-o"),
    "bgfetch_fetch": ("bgfetch background fetch", "C1-s"),
    "bgfetch_serve_proxy": ("bgfetch stored body via proxy", "C2-^"),
    "bgfetch_serve_direct": ("bgfetch stored body, listen port", "C2--v"),
    "squid_miss": ("Squid miss", "C3x"),
    "squid_hit": ("Squid hit", "C3+"),
}
POINTS = {  # part: {scenario: (label, style)}, each measured at one body size
    "tls": {"plain_h1": ("HTTPS: plain mitmdump (HTTP/1.1)", "C0D"), "plain_h2": ("HTTPS: plain mitmdump (HTTP/2)", "C0d"),
            "fetch": ("HTTPS: bgfetch background fetch", "C1D"), "serve_h1": ("HTTPS: bgfetch stored body (HTTP/1.1)", "C2D"),
            "serve_h2": ("HTTPS: bgfetch stored body (HTTP/2)", "C2d")},
    "segmented": {"direct": ("limit_rate 25m/connection: direct curl", "kP"),
                  "fetch": ("limit_rate 25m/connection: bgfetch, 4 connections", "C1P")},
}


def plot(result: dict, path: Path) -> Path | None:
    """Write the PNG; None (and a note) when matplotlib is not installed or nothing was measured."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (it is in the `bench` extra: pip install -e '.[bench]')")
        return None
    sweep = result["throughput"]
    if not sweep:
        return None
    sizes = [t["size"] for t in sweep]
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(12, 5))
    for key, (label, style) in LINES.items():
        points = [(t["size"], t["scenarios"][key]["mbps"]) for t in sweep if t["scenarios"][key].get("mbps")]
        if points:
            speed.plot(*zip(*points), style, label=label, markersize=8)
    for part, size_key in (("tls", "target_size"), ("segmented", "segmented_size")):
        at = result["counts"].get(size_key) if part == "segmented" else result.get(size_key)
        for key, (label, style) in POINTS[part].items():
            if at and (mbps := (result.get(part) or {}).get(key, {}).get("mbps")):
                speed.plot([at], [mbps], style, label=label, markersize=7, linestyle="none")
    speed.set(title="throughput (median of runs)", ylabel="MB/s", ylim=(0, None))

    def rss(proc: str, keys: tuple[str, ...]) -> list[tuple[int, float]]:
        return [(t["size"], v) for t in sweep if (v := worst_rss(t["scenarios"], proc, keys))]

    for label, style, points in (
        ("plain mitmdump", "C0-o", rss("mitmdump", ("plain",))),
        ("bgfetch: mitmdump", "C1-s", rss("mitmdump", BGFETCH)),
        ("bgfetch: store process", "C2-^", rss("store", BGFETCH)),
    ):
        if points:
            memory.plot(*zip(*points), style, label=label, markersize=8)
    memory.axhline(RSS_LIMIT_MB, color="C3", linestyle="--", linewidth=1, label=f"target < {RSS_LIMIT_MB:.0f} MB")
    memory.set(title="peak RSS, fetching and serving (worst run)", ylabel="MB", ylim=(0, RSS_LIMIT_MB * 1.3))
    for ax in (speed, memory):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [human_size(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("body size")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"bgfetch bench, {result['started'][:10]}: {machine_line(result['machine'])}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
