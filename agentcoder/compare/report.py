"""`compare --report`: report.md answering the project's research questions from the runs at hand.

Each question names the figure that answers it and, for accuracy, the paired difference with its
95% bootstrap interval over the shared test examples: "beyond the interval" means the interval of
the difference excludes zero.  A question whose runs do not exist yet says "not yet run".
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from agentcoder.compare.budget import ARMS, COMPUTE_PNG, INIT, compute_frame, is_continued, start_of
from agentcoder.compare.plots import ACCURACY_PNG, CURVES_PNG, EFFICIENCY_PNG, QUANT_ORDER
from agentcoder.compare.runs import UNTRAINED, Run
from agentcoder.compare.stats import paired_difference
from agentcoder.compare.tables import RUN_DIRS_SEP, display_table, fraction_label, percent_frame, to_markdown
from agentcoder.evaluation.metrics import metric_legend

PREFERENCE_METHODS = ("dpo", "ppo", "grpo")


def _pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _preds(row: pd.Series, by_dir: dict[str, Run]) -> list[list[dict]]:
    dirs = str(row["run_dirs"]).split(RUN_DIRS_SEP)
    return [by_dir[d].predictions for d in dirs if by_dir.get(d) and by_dir[d].predictions]


def _compare(a: pd.Series, b: pd.Series, by_dir: dict[str, Run]) -> dict[str, Any]:
    """B minus A in exact match, paired over shared examples when both sides have predictions."""
    ea, eb = a["exact_match_mean"], b["exact_match_mean"]
    out = {"a": ea, "b": eb, "diff": eb - ea, "lo": math.nan, "hi": math.nan, "verdict": ""}
    if a["example_set"] != b["example_set"]:
        out["verdict"] = "not comparable: different example sets"
        return out
    pa, pb = _preds(a, by_dir), _preds(b, by_dir)
    if not pa or not pb:
        out["verdict"] = "no predictions: no interval"
        return out
    d = paired_difference(pa, pb)
    if d["lo"] == d["hi"]:
        # Every resample gives the same difference: no example is answered differently by seed-averaged
        # verdicts, so there is nothing to test, not a certain zero.
        out.update(diff=d["diff"], verdict="no test example changes its verdict")
        return out
    out.update(diff=d["diff"], lo=d["lo"], hi=d["hi"])
    out["verdict"] = "**beyond the interval**" if d["beyond"] else "within the interval: it includes 0"
    return out


def _diff_cell(c: dict[str, Any]) -> str:
    text = f"{100 * c['diff']:+.1f}"
    if not math.isnan(c["lo"]):
        text += f" [{100 * c['lo']:+.1f}, {100 * c['hi']:+.1f}]"
    return text


def _pairs_table(table: pd.DataFrame, base: str, other: str, by_dir: dict[str, Run]) -> tuple[str, list[str]]:
    """Markdown rows OTHER vs BASE per (model, quant, fraction), and one headline per (model, quant):
    the comparison at OTHER's largest data fraction."""
    t = table[table["init"] != "random"]
    lines = [f"| model | quant | fraction | {base} EM % | {other} EM % | difference, points [95%] | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines[0] = lines[0].replace(f"| {other} EM % |", f"| {other} EM % (variant) |")
    heads: dict[tuple, str] = {}
    rows = t[t["method"] == other]
    quant_rank = rows["quant"].map(lambda q: QUANT_ORDER.index(q) if q in QUANT_ORDER else len(QUANT_ORDER))
    for _, o in rows.assign(_q=quant_rank).sort_values(["model", "_q", "data_fraction"]).iterrows():
        cands = t[(t["method"] == base) & (t["model"] == o["model"]) & (t["quant"] == o["quant"])]
        if base not in UNTRAINED:
            cands = cands[cands["data_fraction"] == o["data_fraction"]]
        if cands.empty:
            continue
        same = cands[cands["example_set"] == o["example_set"]]
        b = (same if len(same) else cands).iloc[0]
        c = _compare(b, o, by_dir)
        variant = f" ({o['variant']})" if o.get("variant") else ""
        lines.append(f"| {o['model']} | {o['quant']} | {fraction_label(o['data_fraction'])} | {_pct(c['a'])} | "
                     f"{_pct(c['b'])}{variant} | {_diff_cell(c)} | {c['verdict']} |")
        if len(same):
            heads[(o["model"], o["quant"], o.get("variant") or "")] = (
                f"{other}{variant} vs {base}, {o['model']} quant={o['quant']}, "
                f"fraction {fraction_label(o['data_fraction'])}: "
                f"{_pct(c['a'])}% -> {_pct(c['b'])}%, {_diff_cell(c)} points: {c['verdict'].strip('*')}")
    return ("\n".join(lines) + "\n" if len(lines) > 2 else ""), list(heads.values())


def _fraction_section(table: pd.DataFrame, by_dir: dict[str, Run]) -> tuple[str, list[str]]:
    t = table[(table["init"] != "random") & table["data_fraction"].notna()]
    lines, heads = [], []
    for (model, method, quant, _, variant), sub in t.groupby(["model", "method", "quant", "example_set", "variant"]):
        sub = sub.sort_values("data_fraction")
        per = ", ".join(f"{fraction_label(r['data_fraction'])}: {_pct(r['exact_match_mean'])}%"
                        for _, r in sub.iterrows())
        method = f"{method} ({variant})" if variant else method
        line = f"- {model} {method} quant={quant} (n={int(sub['n'].iloc[0])}): {per}"
        if len(sub) > 1:
            lo_f, hi_f = fraction_label(sub.iloc[0]["data_fraction"]), fraction_label(sub.iloc[-1]["data_fraction"])
            c = _compare(sub.iloc[0], sub.iloc[-1], by_dir)
            line += f"; {hi_f} vs {lo_f}: {_diff_cell(c)} points, {c['verdict']}"
            heads.append(f"{method} quant={quant}, fraction {hi_f} vs {lo_f}: {_diff_cell(c)} points: "
                         f"{c['verdict'].strip('*')}")
        lines.append(line)
    return ("\n".join(lines) + "\n" if lines else ""), heads


def _minutes(seconds: float) -> str:
    return "?" if math.isnan(seconds) else f"{seconds / 60:.0f}"


def _init_section(table: pd.DataFrame, by_dir: dict[str, Run]) -> tuple[str, list[str]]:
    """RL from the base model (method.init=base) against the same method from the SFT stage: the
    configuration that differs only in its start, else the one from the stage nearest in compute (a
    study that gives the run from base the stage's time as well runs it for more steps)."""
    if table.empty or "variant" not in table:
        return "", []
    t = compute_frame(table, by_dir)
    t = t[t["method"].isin(PREFERENCE_METHODS)]
    lines = ["| method | model | quant | fraction | from SFT EM % (min) | from base EM % (min) | "
             "difference, points [95%] | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    heads = []
    starts = pd.Series([start_of(r) for _, r in t.iterrows()], index=t.index, dtype=object)
    for _, b in t[starts == "base"].iterrows():
        same = (t["method"] == b["method"]) & (t["model"] == b["model"]) & (t["quant"] == b["quant"]) \
            & (t["data_fraction"] == b["data_fraction"])
        match = t[same & (t["variant"] == b["variant"].replace(f"{INIT}base", f"{INIT}sft"))]
        if match.empty:
            match = t[same & (starts == "sft")]
            match = match.iloc[(match["compute_s"] - b["compute_s"]).abs().fillna(math.inf).argsort()]
        if match.empty:
            continue
        a = match.iloc[0]
        c = _compare(a, b, by_dir)
        ma, mb = _minutes(a["compute_s"]), _minutes(b["compute_s"])
        lines.append(f"| {b['method']} | {b['model']} | {b['quant']} | {fraction_label(b['data_fraction'])} | "
                     f"{_pct(c['a'])} ({ma}) | {_pct(c['b'])} ({mb}) | {_diff_cell(c)} | {c['verdict']} |")
        heads.append(f"{b['method']} from base vs from the SFT stage ({mb} vs {ma} min), {b['model']} "
                     f"quant={b['quant']}: {_pct(c['a'])}% -> {_pct(c['b'])}%, {_diff_cell(c)} points: "
                     f"{c['verdict'].strip('*')}")
    return ("\n".join(lines) + "\n" if len(lines) > 2 else ""), heads


def _equal_compute_section(table: pd.DataFrame, by_dir: dict[str, Run]) -> tuple[str, list[str]]:
    """Each dpo/grpo/ppo configuration against the continued-SFT arm (lora, method.init=sft) of the same
    model, quant and fraction: the same stage, more of the same SFT for the extra compute."""
    t = compute_frame(table, by_dir)
    if t.empty:
        return "", []
    lines = ["| arm | model | quant | fraction | continued SFT EM % (min) | arm EM % (min) | "
             "difference, points [95%] | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    heads = []
    continued = t[t.apply(is_continued, axis=1)]
    for _, arm in t[t["method"].isin(ARMS)].iterrows():
        match = continued[(continued["model"] == arm["model"]) & (continued["quant"] == arm["quant"])
                          & (continued["data_fraction"] == arm["data_fraction"])]
        if match.empty:
            continue
        same = match[match["example_set"] == arm["example_set"]]
        c_row = (same if len(same) else match).iloc[0]
        c = _compare(c_row, arm, by_dir)
        minutes = _minutes(c_row["compute_s"]), _minutes(arm["compute_s"])
        lines.append(f"| {arm['arm']} | {arm['model']} | {arm['quant']} | {fraction_label(arm['data_fraction'])} | "
                     f"{_pct(c['a'])} ({minutes[0]}) | {_pct(c['b'])} ({minutes[1]}) | {_diff_cell(c)} | "
                     f"{c['verdict']} |")
        heads.append(f"{arm['arm']} vs continued SFT at equal compute ({minutes[1]} vs {minutes[0]} min), "
                     f"{arm['model']} quant={arm['quant']}: {_pct(c['a'])}% -> {_pct(c['b'])}%, {_diff_cell(c)} "
                     f"points: {c['verdict'].strip('*')}")
    return ("\n".join(lines) + "\n" if len(lines) > 2 else ""), heads


def _efficiency_heads(table: pd.DataFrame) -> list[str]:
    """Per trained method: peak memory and train time of each quant at the largest fraction."""
    heads = []
    t = table[table["data_fraction"].notna()]
    for (model, method), sub in t.groupby(["model", "method"]):
        top = sub[sub["data_fraction"] == sub["data_fraction"].max()]
        if top["quant"].nunique() < 2:
            continue
        parts = []
        for q in [q for q in ("none", "8bit", "4bit") if q in set(top["quant"])]:
            r = top[top["quant"] == q].iloc[0]
            mem = r["peak_memory_bytes_mean"] / 2**30
            parts.append(f"{q} {mem:.2f} GiB / {r['train_time_s_mean']:.0f} s / p50 {r['latency_p50_s_mean']:.2f} s")
        heads.append(f"{method} cost by quant ({model}, fraction {fraction_label(top['data_fraction'].iloc[0])}; "
                     f"peak memory / train time / latency): " + "; ".join(parts))
    return heads


def _efficiency_section(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    lines = ["| model | method | quant | fraction | latency p50 s | latency p95 s | ms / example (batched) "
             "| peak memory GiB | train time s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def cell(r: pd.Series, col: str, scale: float = 1.0, digits: int = 2) -> str:
        m, s = r[f"{col}_mean"], r[f"{col}_std"]
        if math.isnan(m):
            return "-"
        return f"{m * scale:.{digits}f}" + ("" if math.isnan(s) else f" ±{s * scale:.{digits}f}")

    for _, r in table.iterrows():
        model = r["model"] + (" (random-init)" if r["init"] == "random" else "")
        cells = [model, r["method"], r["quant"], fraction_label(r["data_fraction"]), cell(r, "latency_p50_s"),
                 cell(r, "latency_p95_s"), cell(r, "ms_per_example", digits=0),
                 cell(r, "peak_memory_bytes", 1 / 2**30), cell(r, "train_time_s", digits=0)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _status_counts(failures: pd.DataFrame) -> str:
    if failures.empty:
        return ""
    return " (" + ", ".join(f"{n} {status}" for status, n in failures["status"].value_counts().items()) + ")"


def write_report(
    path: Path, table: pd.DataFrame, failures: pd.DataFrame, reasons: pd.DataFrame, runs: list[Run],
    plots: list[Path], notes: list[str], sources: list[str], *, search: str = "",
) -> Path:
    """report.md; SEARCH: the "Search" section of a search's trials (compare/search.py), if any."""
    from agentcoder.files import atomic_write_text

    by_dir = {r.name: r for r in runs}
    have = {p.name for p in plots}

    def fig(name: str, caption: str) -> str:
        return f"![{caption}]({name})\n" if name in have else f"_(no data for {name})_\n"

    methods = set(table["method"]) if not table.empty else set()
    q1, h1 = _pairs_table(table, "baseline", "lora", by_dir) if not table.empty else ("", [])
    q2_parts, h2 = [], []
    for m in PREFERENCE_METHODS:
        if m not in methods:
            q2_parts.append(f"- **{m}**: not yet run.\n")
            h2.append(f"{m}: not yet run")
            continue
        body, heads = _pairs_table(table, "lora", m, by_dir)
        q2_parts.append(f"**{m} vs lora**\n\n" + (body or "_no lora run with the same model, quant and fraction_\n")
                        + "\n")
        h2 += heads or [f"{m}: no matching lora run"]
    q3, h3 = _fraction_section(table, by_dir) if not table.empty else ("", [])
    q4, h4 = _init_section(table, by_dir)
    q5, h5 = _equal_compute_section(table, by_dir)

    headline = [*(h1 or ["lora vs baseline: not yet run" if "lora" not in methods else
                         "lora vs baseline: no baseline with the same model, quant and example set"]),
                *h2, *h5, *h4, *h3, *(_efficiency_heads(table) if not table.empty else [])]
    ci = ("95% intervals: bootstrap over test examples (seeds resampled together), in percent; "
          "`±` is the standard deviation over seeds; `-`: not measured (no eligible example, or runs "
          f"older than the metric). Columns: {metric_legend()}.")
    method_note = ("Differences are paired: both sides on the same test examples, the 95% interval from "
                   "resampling those examples. It covers the choice of test examples, not of seeds: "
                   "compare a small difference with the `±` over seeds in the table at the end.\n")
    parts = [
        "# agentcoder: comparison report\n",
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} from {', '.join(sources)}: "
        f"{int(table['runs'].sum()) if not table.empty else 0} completed runs in {len(table)} configurations, "
        f"{len(failures)} runs not in the means{_status_counts(failures)} (listed at the end).\n",
        "## Headline\n",
        "\n".join(f"- {h}" for h in headline) + "\n",
        method_note,
        "## Does LoRA help?\n",
        fig(ACCURACY_PNG, "accuracy vs data fraction"),
        (q1 or "_not yet run: needs baseline and lora runs of the same model and quant_\n"),
        "## Do DPO / PPO / GRPO beat LoRA?\n",
        "".join(q2_parts),
        "## At equal compute\n",
        "From the same SFT stage, each preference method against more of the same SFT (`method=lora "
        "method.init=sft`); minutes are training time, the stage's included (and dpo's sampling of its pairs).\n",
        fig(COMPUTE_PNG, "accuracy vs compute"),
        (q5 or "_not yet run: needs dpo/grpo/ppo and a continued-SFT arm (method=lora method.init=sft) of the "
               "same model, quant and fraction_\n"),
        "## Does RL need the SFT stage first?\n",
        (q4 or "_not yet run: needs an RL method from both method.init=sft and method.init=base_\n"),
        "## Accuracy per data fraction\n",
        fig(ACCURACY_PNG, "accuracy vs data fraction"),
        (q3 or "_not yet run: needs trained runs_\n"),
        "## Latency, memory and train time per quant\n",
        fig(EFFICIENCY_PNG, "cost by quant"),
        "Figures are means over seeds (`±` std over seeds when there are several); a single run has no interval.\n\n"
        + _efficiency_section(table),
        "## Training curves\n",
        fig(CURVES_PNG, "training curves"),
        "## All configurations\n",
        ci + "\n",
        to_markdown(display_table(table).drop(columns=["status"], errors="ignore")),
        *(["\n" + "\n".join(f"- {n}" for n in notes) + "\n"] if notes else []),
        "## Errors by matcher reason (share of evaluated examples)\n",
        to_markdown(percent_frame(reasons)) if not reasons.empty else "_(no predictions)_\n",
        "## Not in the means\n",
        to_markdown(failures.drop(columns=["started_at"], errors="ignore")) if not failures.empty else "_(none)_\n",
        *([search] if search else []),
    ]
    atomic_write_text(path, "\n".join(parts))
    return path
