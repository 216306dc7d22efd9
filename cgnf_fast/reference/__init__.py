"""Pure Python / PyTorch oracles for every native op (the semantics the kernels must match)."""
