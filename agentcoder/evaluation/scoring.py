"""One model output against one example's gold calls: parse, then match.

This is the single scoring step: `evaluator.judge` (the metrics) and the training reward both call
`score_output`, so a figure and a reward can never disagree on what counts as a correct call.
It is total: any text gives a ParseResult and a Verdict, never an exception, and nothing in the
text is executed.  `argument_counts` adds the per-argument counts behind argument precision and
recall, judged value by value with the matcher's own `check_value`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentcoder.data.example import GoldCall, ToolCall
from agentcoder.evaluation.matcher import PairingMode, Verdict, check_value, match_calls
from agentcoder.evaluation.parser import ParseResult, parse_calls

# What an answer that does not parse counts as where no call is expected (an irrelevance prompt).
# "correct": BFCL's checker, for which an answer it cannot decode holds no call, so the model abstained
# (eval.irrelevance_unparsed's default: the headline is BFCL's computation); "wrong": only a clean
# answer without a call abstains (the training signals' rule, so that no reward goes to garbled text).
IrrelevanceRule = Literal["correct", "wrong"]
IRRELEVANCE_RULES: tuple[str, ...] = ("correct", "wrong")
UNPARSED_ABSTENTION = "unparsed_irrelevance"  # the verdict change the "correct" rule makes (rescoring reports it)


def score_output(
    answer: Sequence[GoldCall],
    tools: Sequence[dict[str, Any]],
    raw: str,
    *,
    parallel_matching: PairingMode = "optimal",
    irrelevance_unparsed: IrrelevanceRule = "wrong",
) -> tuple[ParseResult, Verdict]:
    """Parse RAW into calls and judge them against ANSWER (empty: no call expected) given TOOLS;
    IRRELEVANCE_UNPARSED says what an unparseable answer to an irrelevance prompt counts as."""
    if irrelevance_unparsed not in IRRELEVANCE_RULES:
        raise ValueError(f"irrelevance_unparsed={irrelevance_unparsed!r}; "
                         f"expected one of {', '.join(IRRELEVANCE_RULES)}")
    parsed = parse_calls(raw)
    verdict = match_calls(list(answer), list(tools), parsed, parallel_matching=parallel_matching)
    if irrelevance_unparsed == "correct" and not answer and parsed.status == "failure":
        verdict = Verdict(True, None, True)  # as a clean abstention; the row's status still says "failure"
    return parsed, verdict


@dataclass(frozen=True)
class ArgumentCounts:
    """Per-argument counts of one answer (the fields a prediction row records).

    argument precision = pred_args_right / pred_args; argument recall = gold_args_right / gold_args.
    """

    pred_args: int  # arguments in the parsed calls (0 for a parse failure or no call)
    pred_args_right: int  # of those: in a call paired with a gold call, and an acceptable value of that gold argument
    gold_args: int  # gold arguments that may not be omitted (no "" among their acceptable values)
    gold_args_right: int  # of those: given with an acceptable value in the paired predicted call


def argument_counts(answer: Sequence[GoldCall], tools: Sequence[dict[str, Any]], parsed: ParseResult) -> ArgumentCounts:
    """Count predicted and gold arguments and the right ones among them (see ArgumentCounts).

    Calls are paired one to one, a gold call only with a predicted call of the same name, so as to
    maximise the right arguments; unlike the exact match, the pairing does not need as many calls
    as the gold has, so a partly right parallel answer gets partial credit.  A predicted argument is
    right when its call is paired, the gold call has that argument, and the matcher's `check_value`
    accepts the value (BFCL's types and string leniency).  An extra argument, any argument of an
    unpaired call and any argument of a call where none is expected are wrong.  A gold argument with
    "" among its acceptable values is optional: omitting it is neither a hit nor a miss (it is not in
    `gold_args`), giving it counts in precision like any predicted argument.
    """
    gold = list(answer)
    pred = list(parsed.calls) if parsed.status == "calls" else []
    schemas = _schemas(tools)
    mandatory = sum(1 for g in gold for acceptable in g.arguments.values() if "" not in acceptable)
    scores = [[_pair_counts(g, p, schemas.get(g.name)) for p in pred] for g in gold]
    right = [scores[gi][pi] for gi, pi in _pairing(scores)]
    return ArgumentCounts(
        pred_args=sum(len(p.arguments) for p in pred),
        pred_args_right=sum(r[0] for r in right),
        gold_args=mandatory,
        gold_args_right=sum(r[1] for r in right),
    )


def _schemas(tools: Sequence[Any]) -> dict[str, dict[str, Any]]:
    # OpenAI's {"type": "function", "function": {...}} form carries the same schema one level down.
    out = {}
    for t in tools:
        t = t["function"] if isinstance(t, dict) and isinstance(t.get("function"), dict) else t
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            out[t["name"]] = t
    return out


def _pair_counts(gold: GoldCall, pred: ToolCall, schema: dict[str, Any] | None) -> tuple[int, int]:
    """(right predicted arguments, right mandatory gold arguments) if PRED answers GOLD; (0, 0) for another name."""
    if pred.name != gold.name:
        return 0, 0
    params = (schema or {}).get("parameters")
    properties = (params.get("properties") if isinstance(params, dict) else None) or {}
    ok = {
        arg for arg, value in pred.arguments.items()
        if arg in gold.arguments and check_value(arg, value, gold.arguments[arg], properties.get(arg)) is None
    }
    return len(ok), sum(1 for arg in ok if "" not in gold.arguments[arg])


def _pairing(scores: list[list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """(gold, prediction) index pairs that maximise the right arguments (a rectangular assignment)."""
    if not scores or not scores[0]:
        return []
    if len(scores) == 1 and len(scores[0]) == 1:
        return [(0, 0)]
    from scipy.optimize import linear_sum_assignment  # only answers with several calls need it

    rows, cols = linear_sum_assignment([[sum(s) for s in row] for row in scores], maximize=True)
    return list(zip(rows.tolist(), cols.tolist(), strict=True))
