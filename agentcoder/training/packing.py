"""Packed rows for sdpa/eager attention: BFD-packed examples kept as a (batch, max_length) tensor.

TRL packs examples best-fit-decreasing into rows of max_length tokens and then, padding-free,
flattens the whole batch into ONE row ('flat').  That is right for flash-attention, whose varlen
kernel reads cu_seq_lens and never computes attention across examples.  sdpa and eager attention
instead build a dense mask over the row, so a flat row of batch_size x max_length tokens costs
attention quadratic in the whole batch: on CPU, 4 rows of 1024 took 18.3 GiB and ran at 0.58x TRL's
padded default.  'rows' keeps the packed rows apart instead: attention per row, as in a padded
batch, but rows are full.

Both layouts pass `position_ids` (restarting at 0 for every example) and no attention_mask.  With
the sdpa and eager attention of transformers 5, `masking_utils._preprocess_mask_arguments` then
calls `find_packed_sequence_indices(position_ids)` per row and `create_causal_mask` ands a
block-diagonal mask into the causal one, so examples never attend across their boundaries.  Only
without a KV cache: given use_cache=True the model builds a DynamicCache and the detection is
skipped; SFTTrainer.compute_loss passes use_cache=False.  tests/test_lora.py checks both cases.
"""

from __future__ import annotations

from typing import Any

from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


class PackedRowsCollator(DataCollatorForLanguageModeling):
    """Batches BFD-packed rows as (batch, longest row) instead of flattening them into one row.

    Rows carry position_ids (restarting at 0 for every example) and no attention_mask, so the
    model masks each row block-diagonally.  Row tails are padded with pad id, position 0 and label
    -100: each pad token is a one-token sequence that attends to itself only.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        del batch["attention_mask"]  # present, it would switch off the packed-sequence detection
        # The first token of each example would otherwise be predicted from the previous example.
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch


def use_packed_rows(trainer: Any, tokenizer: Any, *, on_gpu: bool) -> None:
    """Swap a packing trainer's flattening collator for PackedRowsCollator: rows padded to
    setup.packed_row_multiple tokens (the full max_length on CPU).

    TRL packs (and tokenizes) the dataset either way; it only refuses a custom collator alongside
    packing, so the collator is replaced once the trainer is built.
    """
    from agentcoder.training.setup import packed_row_multiple

    trainer.data_collator = PackedRowsCollator(
        pad_token_id=tokenizer.pad_token_id, return_position_ids=True,
        pad_to_multiple_of=packed_row_multiple(int(trainer.args.max_length), on_gpu=on_gpu))
