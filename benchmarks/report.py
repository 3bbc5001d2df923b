"""Markdown tables from the JSON that ``benchmarks/pipeline.py`` writes (used for BENCHMARKS.md).

python benchmarks/report.py benchmarks/results/test.json benchmarks/results/large.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STAGES = ("decode", "beit3", "prior", "hiera", "memory_decoder", "encode", "post", "other")


def _num(value, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _masks(row: dict) -> str:
    if row.get("masks_equal"):
        return "identical"
    if row.get("masks_match"):
        return f"{row['mask_mismatch_fraction'] * 100:.4f} % px at \\|logit\\| ≤ {row['mismatch_max_abs_logit']:.0e}"
    return "**differ**"


def pipeline_table(rows: list[dict]) -> str:
    lines = [
        "| T | K | baseline s | ours s | speed-up | CPU-time speed-up | extra expr. (ours) | baseline peak MiB "
        "| ours peak MiB | baseline working MiB | ours working MiB | max \\|Δ logit\\| | masks |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        extra = r.get("ours_extra_expression_fraction")
        cpu = r.get("cpu_speedup") or r["baseline_cpu_s"] / r["ours_cpu_s"]
        lines.append(
            f"| {r['frames']} | {r['expressions']} | {_num(r['baseline_s'], 1)} | {_num(r['ours_s'], 1)} "
            f"| **{_num(r.get('speedup'), 2, '×')}** | {_num(cpu, 2, '×')} "
            f"| {'–' if extra is None else f'{extra * 100:.0f} %'} "
            f"| {_num(r['baseline_peak_mib'], 0)} | {_num(r['ours_peak_mib'], 0)} "
            f"| {_num(r['baseline_working_mib'], 0)} | {_num(r['ours_working_mib'], 0)} "
            f"| {r.get('max_abs_logit_diff', 0):.1e} | {_masks(r)} |"
        )
    return "\n".join(lines)


def stage_table(rows: list[dict]) -> str:
    lines = [
        "| T | K | side | " + " | ".join(STAGES) + " | total |",
        "|---:|---:|---|" + "---:|" * (len(STAGES) + 1),
    ]
    for r in rows:
        for side in ("baseline", "ours"):
            cells = " | ".join(_num(r.get(f"{side}_{stage}_s")) for stage in STAGES)
            lines.append(
                f"| {r['frames']} | {r['expressions']} | {side} | {cells} | {_num(r[f'{side}_s'])} |"
            )
    return "\n".join(lines)


def global_table(rows: list[dict]) -> str:
    lines = [
        "| T | baseline s | ours s | baseline working MiB | ours working MiB | ours / baseline "
        "| ours: MiB per added frame | baseline attention matrix MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    previous = None
    for r in rows:
        marginal = "–"
        if previous is not None:
            marginal = _num(
                (r["ours_working_mib"] - previous["ours_working_mib"]) / (r["frames"] - previous["frames"])
            )
        previous = r
        if "baseline_skipped" in r:
            base, ratio = "not run*", f"≤ {r['ours_working_mib'] / r['baseline_attention_mib']:.4f}*"
        else:
            base, ratio = _num(r["baseline_working_mib"], 0), _num(r.get("working_ratio"), 3)
        lines.append(
            f"| {r['frames']} | {_num(r['baseline_s'])} | {_num(r['ours_s'])} | {base} "
            f"| {_num(r['ours_working_mib'], 0)} | {ratio} | {marginal} "
            f"| {_num(r['baseline_attention_mib'], 0)} |"
        )
    return "\n".join(lines)


def linear_fit(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least-squares line through (x, y) points: (slope, intercept, largest |residual| / largest y)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var_x = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / var_x if var_x else 0.0
    intercept = mean_y - slope * mean_x
    worst = max(abs(y - (slope * x + intercept)) for x, y in points)
    return slope, intercept, worst / max(y for _, y in points)


def criteria(rows: list[dict]) -> str:
    """The issue's Done-when checks on one run's rows, wall time and CPU time side by side."""
    lines = ["| check | T | K | wall | CPU time | holds (wall / CPU) |", "|---|---:|---:|---:|---:|---|"]

    def verdict(flag: bool | None) -> str:
        return "–" if flag is None else ("yes" if flag else "**no**")

    for r in (r for r in rows if r["kind"] == "pipeline"):
        cpu = r["baseline_cpu_s"] / r["ours_cpu_s"]
        wall = r.get("speedup")
        if r["expressions"] == 1:
            lines.append(
                f"| not slower, K = 1 (baseline / ours) | {r['frames']} | 1 | {wall:.3f}× | {cpu:.3f}× "
                f"| {verdict(wall >= 1.0)} / {verdict(cpu >= 1.0)} |"
            )
        else:
            lines.append(
                f"| ≥ 1.8× for K = {r['expressions']} | {r['frames']} | {r['expressions']} | {wall:.2f}× | {cpu:.2f}× "
                f"| {verdict(wall >= 1.8)} / {verdict(cpu >= 1.8)} |"
            )
            single = next(
                (
                    s
                    for s in rows
                    if s["kind"] == "pipeline" and s["frames"] == r["frames"] and s["expressions"] == 1
                ),
                None,
            )
            if single:
                k = r["expressions"] - 1
                extra_wall = (r["ours_s"] - single["ours_s"]) / (k * single["ours_s"])
                extra_cpu = (r["ours_cpu_s"] - single["ours_cpu_s"]) / (k * single["ours_cpu_s"])
                lines.append(
                    f"| each extra expression ≤ ~30 % of the first | {r['frames']} | {r['expressions']} "
                    f"| {extra_wall * 100:.0f} % | {extra_cpu * 100:.0f} % "
                    f"| {verdict(extra_wall <= 0.3)} / {verdict(extra_cpu <= 0.3)} |"
                )
    global_rows = sorted((r for r in rows if r["kind"] == "global"), key=lambda r: r["frames"])
    if len(global_rows) >= 2:
        slope, intercept, worst = linear_fit([(r["frames"], r["ours_working_mib"]) for r in global_rows])
        frames = ", ".join(str(r["frames"]) for r in global_rows)
        lines.append(
            f"| global stage memory linear in T (ours: {slope:.2f} MiB/frame + {intercept:.0f} MiB; largest "
            f"residual {worst * 100:.0f} % of the largest value) | {frames} | 1 | | | {verdict(worst <= 0.15)} |"
        )
        last = global_rows[-1]
        bound = last.get("baseline_working_mib") or last["baseline_attention_mib"]
        ratio = last["ours_working_mib"] / bound
        qualifier = "≤ " if "baseline_skipped" in last else ""
        lines.append(
            f"| global stage memory at the largest T ≤ ¼ of the baseline's | {last['frames']} | 1 "
            f"| {qualifier}{ratio:.4f} | | {verdict(ratio <= 0.25)} |"
        )
    return "\n".join(lines)


def render(rows: list[dict]) -> str:
    pipeline = [r for r in rows if r["kind"] == "pipeline"]
    global_rows = sorted((r for r in rows if r["kind"] == "global"), key=lambda r: r["frames"])
    first = rows[0]
    parts = [
        f"Command: `{first.get('command', '?')}`  ",
        f"Machine: {first.get('machine', '?')}; {first.get('threads')} threads per run; {first.get('software', '')}; "
        f"frames {first['frame_size'][0]}x{first['frame_size'][1]}; repeats {first.get('repeats')} "
        "(figures are medians)",
    ]
    if pipeline:
        parts += ["", "Whole pipeline:", "", pipeline_table(pipeline), "", "Stages (wall s):", ""]
        parts += [stage_table(pipeline)]
    if global_rows:
        parts += ["", "Global stage, one expression (working MiB: peak RSS above the RSS at the start):", ""]
        parts += [global_table(global_rows)]
        skipped = [r for r in global_rows if "baseline_skipped" in r]
        if skipped:
            parts += ["", "\\* " + "; ".join(f"T = {r['frames']}: {r['baseline_skipped']}" for r in skipped)]
    parts += ["", "Checks:", "", criteria(rows)]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    for path in args.files:
        print(f"### {path.name}\n")
        print(render(json.loads(path.read_text())))
        print()


if __name__ == "__main__":
    main()
