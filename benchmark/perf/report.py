"""The table ``perf`` prints from its JSON result."""

from __future__ import annotations


def item_line(it: dict) -> str:
    return (f"  {it['kind']} {it['id']}: {it['seconds']:.2f} s, {it['passes_per_s']:.1f} passes/s, efficiency "
            f"{it['efficiency']:.2f} (against the first limit sweep; the table uses both)")


def format_table(res: dict) -> str:
    lim = res["limit"]
    lines = [f"perf {res['date']}: {res['model']} on {res['environment']['device']}, {res['precision']}, "
             f"{res['images']} image(s), profile {res['profile']}, batch size {res['batch_size']}, median of "
             f"{res['repeats']} after {res['warmup']} warm-up; load average {res['load_average']}",
             f"limit: forward {lim['forward']['passes_per_s']:.1f} passes/s (batch {lim['forward']['batch_size']}), "
             + (f"forward+backward {lim['backward']['passes_per_s']:.1f} passes/s (batch "
                f"{lim['backward']['batch_size']})" if lim["backward"] else "forward+backward not needed"),
             f"limit peak (fastest single block): forward {lim['peak']['forward']['passes_per_s']:.1f} passes/s "
             f"(batch {lim['peak']['forward']['batch_size']})", "",
             "| item | passes/img declared | passes/img run | s | img/s | passes/s | efficiency | vs peak |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def passes(d):
        return f"{d['forward']:g}" + (f" + {d['backward']:g} bwd" if d["backward"] else "")

    for it in res["items"]:
        if "not_applicable" in it:
            lines.append(f"| {it['kind']} {it['id']} | not applicable: {it['not_applicable']} | | | | | | |")
            continue
        lines.append(f"| {it['kind']} {it['id']} | {passes(it['declared'])} | {passes(it['measured'])} | "
                     f"{it['seconds']:.2f} | {it['images_per_s']:.3g} | {it['passes_per_s']:.1f} | "
                     f"{it['efficiency']:.2f} | {it['efficiency_vs_peak']:.2f} |")
    if res["peers"] or res["polycam"]:
        lines += ["", "| ours | peer (defaults) | ours s | peer s | peer passes/img | peer efficiency | speed-up |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for p in res["peers"]:
            d = ", ".join(f"{k}={v}" for k, v in p["defaults"].items())
            lines.append(f"| {p['ours']} | {p['peer']} {p['version']} ({d}) | {p['ours_seconds']:.2f} | "
                         f"{p['seconds']:.2f} | {passes(p['measured'])} | {p['efficiency']:.2f} | "
                         f"{p['speedup']:.2f}x |")
        poly = res["polycam"]
        if poly:
            ref = poly["reference"]
            lines.append(f"| pcampm + {poly['outputs'] - 1} derived maps ({poly['passes_run_per_image']:g} passes/img, "
                         f"{poly['passes_saved_per_image']:g} saved) | reference-style loop (PCAM+, PCAM-, PCAM+-, "
                         f"chunks of {ref['chunk']}) | {poly['seconds']:.2f} | {ref['seconds']:.2f} | "
                         f"{ref['passes_per_image']:g} | {ref['efficiency']:.2f} | {poly['speedup']:.2f}x |")
    if res.get("precision_drift"):
        lines += ["", f"| method | {res['precision']} vs fp32: map max abs diff | mean abs diff | Spearman min / mean "
                  "| metric values (fp32 -> " + res["precision"] + ", mean abs diff) |", "|---|---:|---:|---|---|"]
        for d in res["precision_drift"]:
            rho = "n/a" if d["spearman_min"] is None else f"{d['spearman_min']:.4f} / {d['spearman_mean']:.4f}"
            mets = "; ".join(f"{k} {v['fp32']:.4f} -> {v[res['precision']]:.4f} ({v['mean_abs_diff']:.1e})"
                             for k, v in d["metrics"].items())
            lines.append(f"| {d['method']} | {d['map_max_abs_diff']:.2e} | {d['map_mean_abs_diff']:.2e} | {rho} | "
                         f"{mets} |")
    tg = res["targets"]
    if tg["efficiency_min_forward_only"] is not None:
        lines.append(f"\nforward-only efficiency: min {tg['efficiency_min_forward_only']:.2f} (target "
                     f"{tg['efficiency_target']}: {'met' if tg['efficiency_met'] else 'NOT met'}); against the "
                     f"peak: min {tg['efficiency_vs_peak_min_forward_only']:.2f}")
    if tg["polycam_speedup"] is not None:
        lines.append(f"Poly-CAM speed-up over the reference-style loop: {tg['polycam_speedup']:.2f}x (target "
                     f"{tg['polycam_speedup_target']}x); all variants within PCAM+- passes: "
                     f"{tg['polycam_passes_within_pcampm']}")
    return "\n".join(lines)
