"""Turning a run's results into Markdown (the targets, throughput by body size, load) and the JSON beside it."""

from __future__ import annotations

import json
from pathlib import Path

from .measure import human_size
from .sweep import worst_rss

VERDICT = {True: "PASS", False: "MISS", None: "n/a"}
COLUMNS = {"direct": "direct curl", "plain": "plain mitmdump", "squid_miss": "Squid miss", "squid_hit": "Squid hit",
           "bgfetch_fetch": "bgfetch fetch", "bgfetch_serve_proxy": "bgfetch via proxy",
           "bgfetch_serve_direct": "bgfetch listen port"}


def _f(v, fmt: str = "{:.0f}") -> str:
    return "–" if v is None else fmt.format(v)


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A Markdown table; `align` has one letter per column, l or r."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return out + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]


def machine_line(m: dict) -> str:
    return (f"{m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}; Python {m['python']}, "
            f"mitmproxy {m['mitmproxy']}, SQLite {m['sqlite']}, nginx {m['nginx']}, {m['squid']}, {m['curl']}")


def header_line(result: dict) -> str:
    sizes = ", ".join(human_size(s) for s in result["sizes"])
    return (f"{result['started']}, {result['profile']} run: bodies of {sizes}; targets at "
            f"{human_size(result['target_size'])}; every figure the median of {result['runs']} runs, every ratio "
            f"the median of the per-run ratios; MB = 10^6 bytes")


def verdict_lines(result: dict) -> list[str]:
    return [f"{VERDICT[t['ok']]:<4}  {t['what']}: {t['target']} — {t['measured']}" + (f" ({t['why']})" if t["why"] else "")
            for t in result["targets"]]


def targets_table(result: dict) -> list[str]:
    rows = [[t["what"], t["target"], t["measured"] + (f" ({t['why']})" if t["why"] else ""), VERDICT[t["ok"]]]
            for t in result["targets"]]
    return _table(["what", "target", "measured", "verdict"], rows, "lllr")


def _pair(sc: dict, field: str) -> str:
    """"mitmdump / store" of a figure: `rss` (peak MB) or `cpu` (%, with the busiest thread's in brackets)."""
    if field == "rss":
        return f"{_f(sc.get('rss_mitmdump_mb'))} / {_f(sc.get('rss_store_mb'))}"
    return " / ".join(f"{_f(sc.get(f'cpu_{p}_pct'))}" + (f" ({t:.0f})" if (t := sc.get(f"top_thread_{p}_pct")) is not None
                                                         else "") for p in ("mitmdump", "store"))


def sizes_table(result: dict) -> list[str]:
    rows = []
    for t in result["throughput"]:
        sc = t["scenarios"]
        rss = f"{_f(sc['plain'].get('rss_mitmdump_mb'))} / {_f(worst_rss(sc, 'mitmdump'))} / {_f(worst_rss(sc, 'store'))}"
        rows.append([human_size(t["size"]), *(_f(sc[k].get("mbps")) for k in COLUMNS),
                     _f(sc["bgfetch_fetch"].get("wal_copied_seconds"), "{:.1f}"), rss,
                     _pair(sc["bgfetch_fetch"], "cpu"), _pair(sc["bgfetch_serve_proxy"], "cpu")])
    header = ["body", *(f"{name} MB/s" for name in COLUMNS.values()),
              "bgfetch: s from success until the WAL is copied", "peak RSS MB: plain / bgfetch mitmdump / store",
              "CPU % fetching: mitmdump / store (busiest thread)",
              "CPU % serving via proxy: mitmdump / store (busiest thread)"]
    return _table(header, rows, "l" + "r" * 11)


def load_table(result: dict, part: str = "load") -> list[str]:
    rows = []
    for sc in result[part].values():
        text = sc.get("text") or f"skipped: {sc.get('skipped')}"
        if sc.get("identical") is not None:
            text += f"; {sc['identical']} bodies byte-identical"
        if sc.get("errors"):
            text += f"; {len(sc['errors'])} failed runs ({sc['errors'][-1][:120]})"
        rows.append([sc["name"], text, _pair(sc, "cpu"), _pair(sc, "rss")])
    return _table(["scenario", "median of the runs", "CPU %: mitmdump / store (busiest thread)",
                   "peak RSS MB: mitmdump / store"],
                  rows, "llrr")


def markdown(result: dict) -> str:
    out = [f"Machine: {machine_line(result['machine'])}.", "", header_line(result) + ".", "",
           "Targets (issue 8):", "", *targets_table(result), ""]
    if result["throughput"]:
        out += ["Throughput and memory by body size:", "", *sizes_table(result), ""]
    if result["load"]:
        out += ["Load on one store:", "", *load_table(result), ""]
    if result.get("delete"):
        out += ["DELETE of a big body:", "", *_table(["scenario", "median of the runs"],
                                                    [[result["delete"]["name"], result["delete"].get("text") or
                                                      f"skipped: {result['delete'].get('skipped')}"]], "ll"), ""]
    for part, title in (("scale", f"A store of {result['counts'].get('scale', 0):,} registrations"),
                        ("sustained", "Sustained rounds (no sync between)"), ("tls", "HTTPS"),
                        ("segmented", "An origin that caps each connection")):
        if result.get(part):
            out += [f"{title}:", "", *load_table(result, part), ""]
    errors = [f"- {sc['name']}: {e}" for t in result["throughput"] for sc in t["scenarios"].values()
              for e in sc.get("errors", [])]
    if errors:
        out += ["Failed runs:", "", *errors, ""]
    return "\n".join(out)


def write(result: dict, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = result["started"].replace(":", "").replace("-", "").replace("+0000", "Z")
    paths = []
    for name in (f"bench-{stamp}", "latest"):
        j, m = directory / f"{name}.json", directory / f"{name}.md"
        j.write_text(json.dumps(result, indent=2) + "\n")
        m.write_text(markdown(result))
        paths += [j, m]
    return paths
