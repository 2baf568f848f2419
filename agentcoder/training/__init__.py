"""The training setup every training method shares; a method module is a short recipe over it.

    setup      - LoRA config, k-bit preparation, packing layout and gradient checkpointing (`auto`),
                 the TrainingArguments fields every TRL config shares (`method.train.*`)
    packing    - the PackedRowsCollator (packed rows as a (batch, max_length) tensor)
    selection  - val exact match every eval_steps, the best adapter saved atomically and restored
    adapters   - start from a saved adapter: keep training it, or merge it and add a fresh LoRA
    session    - load the base, train with resume, the figures (TrainFigures), and the final test evaluation
    pairs      - preference pairs from a policy's own samples (DPO)
    checkpoints - a loop of our own's checkpoints (PPO): written whole, the newest intact one of the
                 run's config found, every RNG state (CUDA devices included) saved and restored

These return what they decide and measure; the recipe (agentcoder/methods) writes it to run.json.
Importing this package is light; torch and the libraries load inside the functions.
"""
