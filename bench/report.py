"""Turning a run's results into the printed table, a Markdown table and a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from .measure import human_size

RSS_LIMIT_MB = 150.0

# Targets of issue 3, item 10 (the first benchmark); each is a ratio to plain mitmdump in the same run.
RATIO_TARGETS = {
    "bgfetch_fetch": 0.7,  # background fetch, time to success
    "bgfetch_serve_proxy": 0.9,  # stored body served through the proxy
}


def _f(v, fmt: str = "{:.0f}", none: str = "–") -> str:
    return none if v is None else fmt.format(v)


def evaluate(sc: dict) -> list[dict]:
    """The targets that apply to one scenario row, each with its measured value and ok flag."""
    out = []
    if sc.get("skipped") or sc.get("mbps") is None:
        return out
    want = RATIO_TARGETS.get(sc["key"])
    if want is not None and sc.get("ratio") is not None:
        out.append({"target": f"≥ {want:.2f}× plain", "value": round(sc["ratio"], 3), "ok": sc["ratio"] >= want})
    if sc["key"].startswith("bgfetch"):
        for proc in ("mitmdump", "store"):
            rss = sc.get(f"rss_{proc}_mb")
            if rss is not None:
                out.append({"target": f"{proc} RSS < {RSS_LIMIT_MB:.0f} MB", "value": round(rss, 1), "ok": rss < RSS_LIMIT_MB})
            else:
                out.append({"target": f"{proc} RSS < {RSS_LIMIT_MB:.0f} MB", "value": None, "ok": False,
                            "note": "process not found"})
    if sc.get("sha256_ok") is not None:
        out.append({"target": "byte-identical", "value": sc["sha256_ok"], "ok": sc["sha256_ok"]})
    if sc.get("origin_requests") is not None and sc["key"] in ("bgfetch_serve_proxy", "bgfetch_serve_direct"):
        n = sc["origin_requests"]
        out.append({"target": "origin untouched", "value": n, "ok": n == 0})
    return out


def _target_cell(sc: dict) -> str:
    if sc.get("skipped"):
        return "skipped"
    return "; ".join(f"{t['target']} {'PASS' if t['ok'] else 'MISS'}" for t in sc.get("targets", [])) or "–"


COLUMNS = ["scenario", "MB/s (median)", "× plain mitmdump", "peak RSS mitmdump MB", "peak RSS store MB",
           "CPU mitmdump %", "CPU store %", "targets"]


def rows(result: dict) -> list[list[str]]:
    out = []
    for sc in result["scenarios"]:
        if sc.get("skipped"):
            out.append([sc["name"], "skipped", "", "", "", "", "", sc["skipped"]])
            continue
        out.append([
            sc["name"],
            _f(sc.get("mbps")),
            _f(sc.get("ratio"), "{:.2f}×"),
            _f(sc.get("rss_mitmdump_mb"), "{:.1f}"),
            _f(sc.get("rss_store_mb"), "{:.1f}"),
            _f(sc.get("cpu_mitmdump_pct")),
            _f(sc.get("cpu_store_pct")),
            _target_cell(sc),
        ])
    return out


def machine_line(m: dict) -> str:
    return (f"{m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}; Python {m['python']}, "
            f"mitmproxy {m['mitmproxy']}, SQLite {m['sqlite']}, nginx {m['nginx']}, {m['curl']}")


def header_line(result: dict) -> str:
    return (f"body {human_size(result['size'])} ({result['size']:,} bytes), median of {result['runs']} runs, "
            f"MB = 10^6 bytes, {result['started']}")


def text_table(result: dict) -> str:
    table = [COLUMNS] + rows(result)
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    right = {1, 2, 3, 4, 5, 6}
    lines = []
    for n, r in enumerate(table):
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(result: dict) -> str:
    out = [f"Machine: {machine_line(result['machine'])}.", "", f"{header_line(result)[0].upper()}{header_line(result)[1:]}.", "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * 6 + ["---"]) + "|"]
    for r in rows(result):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    verdicts = verdict_lines(result)
    if verdicts:
        out += ["", "Targets (issue 3):", ""] + [f"- {v}" for v in verdicts]
    return "\n".join(out) + "\n"


def verdict_lines(result: dict) -> list[str]:
    lines = []
    for sc in result["scenarios"]:
        for t in sc.get("targets", []):
            val = "n/a" if t["value"] is None else t["value"]
            note = f" ({t['note']})" if t.get("note") else ""
            lines.append(f"{'PASS' if t['ok'] else 'MISS'}  {sc['name']}: {t['target']} — measured {val}{note}")
    return lines


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
