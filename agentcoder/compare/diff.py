"""Two runs example by example: which examples each gets right, and McNemar's test on the disagreements.

McNemar's exact test asks whether the examples only A gets right and those only B gets right are
a fair coin's split: the examples both get right (or wrong) say nothing about which is better.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from agentcoder.compare.runs import load_run
from agentcoder.compare.stats import mcnemar_exact, paired_difference
from agentcoder.files import PREDICTIONS_FILE


class DiffError(ValueError):
    pass


@dataclass
class RunDiff:
    a: str
    b: str
    examples: pd.DataFrame  # id, category, a_correct, b_correct, a_reason, b_reason, same_raw (shared ids only)
    only_in_a: int  # ids evaluated by A but not by B (left out of the counts)
    only_in_b: int

    def counts(self) -> dict[str, int]:
        e = self.examples
        return {
            "both_right": int((e.a_correct & e.b_correct).sum()),
            "only_a_right": int((e.a_correct & ~e.b_correct).sum()),
            "only_b_right": int((~e.a_correct & e.b_correct).sum()),
            "both_wrong": int((~e.a_correct & ~e.b_correct).sum()),
        }

    def summary(self) -> dict[str, Any]:
        c = self.counts()
        e = self.examples
        n = len(e)
        # B minus A in exact match with its paired-bootstrap 95% interval over the shared examples.
        rows = [[{"id": i, "correct": bool(v)} for i, v in zip(e.id, e[col], strict=True)]
                for col in ("a_correct", "b_correct")]
        d = paired_difference([rows[0]], [rows[1]]) if n else {"diff": float("nan"), "lo": float("nan"),
                                                                "hi": float("nan")}
        return {
            "n": n,
            **c,
            "a_exact_match": (c["both_right"] + c["only_a_right"]) / n if n else float("nan"),
            "b_exact_match": (c["both_right"] + c["only_b_right"]) / n if n else float("nan"),
            "exact_match_diff": d["diff"], "exact_match_diff_lo": d["lo"], "exact_match_diff_hi": d["hi"],
            "same_raw": int(e["same_raw"].sum()),
            "mcnemar_p": mcnemar_exact(c["only_a_right"], c["only_b_right"]),
        }

    def render(self, max_ids: int = 15) -> str:
        s = self.summary()
        lines = [
            f"A: {self.a}",
            f"B: {self.b}",
            f"shared examples: {s['n']}" + (
                f" (left out: {self.only_in_a} only in A, {self.only_in_b} only in B)"
                if self.only_in_a or self.only_in_b else ""),
            f"exact match: A {100 * s['a_exact_match']:.1f}%  B {100 * s['b_exact_match']:.1f}%  "
            f"B - A {100 * s['exact_match_diff']:+.1f} points [95% paired bootstrap "
            f"{100 * s['exact_match_diff_lo']:+.1f}, {100 * s['exact_match_diff_hi']:+.1f}]",
            f"same raw output: {s['same_raw']}/{s['n']}; same verdict: {s['both_right'] + s['both_wrong']}/{s['n']}",
            "",
            "             B right  B wrong",
            f"  A right  {s['both_right']:8d} {s['only_a_right']:8d}",
            f"  A wrong  {s['only_b_right']:8d} {s['both_wrong']:8d}",
            "",
            f"McNemar exact test on the {s['only_a_right'] + s['only_b_right']} disagreements: "
            f"p = {s['mcnemar_p']:.4g}" + (" (differ at the 5% level)" if s["mcnemar_p"] < 0.05
                                             else " (no evidence they differ at the 5% level)"),
        ]
        e = self.examples
        for title, mask, reason in (("only A right", e.a_correct & ~e.b_correct, "b_reason"),
                                    ("only B right", ~e.a_correct & e.b_correct, "a_reason")):
            sub = e[mask]
            if len(sub):
                lines.append(f"{title} ({len(sub)}; the other run's reason):")
                for _, r in sub.head(max_ids).iterrows():
                    lines.append(f"  {r['id']}  [{r['category']}]  {r[reason]}")
                if len(sub) > max_ids:
                    lines.append(f"  ... {len(sub) - max_ids} more in diff.csv")
        return "\n".join(lines)


def _predictions(run_dir: Path) -> pd.DataFrame:
    run = load_run(run_dir, keep=("raw",))  # a diff also reads the text
    if run.predictions is None:
        status = run.row.get("status")
        why = f"status {status}" if status != "completed" else f"no {PREDICTIONS_FILE}"
        raise DiffError(f"--diff {run_dir}: no predictions to compare ({why})")
    df = pd.DataFrame(run.predictions)
    return df.drop_duplicates("id", keep="last").set_index("id")


def diff_runs(a: Path, b: Path) -> RunDiff:
    """Align A's and B's predictions on their shared example ids."""
    pa, pb = _predictions(Path(a)), _predictions(Path(b))
    shared = sorted(set(pa.index) & set(pb.index))
    if not shared:
        raise DiffError(f"--diff: {a} and {b} share no evaluated example (different splits or data?)")
    examples = pd.DataFrame({
        "id": shared,
        "category": pa.loc[shared, "category"].to_numpy(),
        "a_correct": pa.loc[shared, "correct"].fillna(False).astype(bool).to_numpy(),
        "b_correct": pb.loc[shared, "correct"].fillna(False).astype(bool).to_numpy(),
        "a_reason": pa.loc[shared, "reason"].to_numpy(),
        "b_reason": pb.loc[shared, "reason"].to_numpy(),
        "same_raw": pa.loc[shared, "raw"].to_numpy() == pb.loc[shared, "raw"].to_numpy(),
    })
    return RunDiff(str(a), str(b), examples, len(set(pa.index) - set(shared)), len(set(pb.index) - set(shared)))
