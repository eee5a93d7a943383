"""Pure loss functions, one file per family; each docstring gives the formula and the paper."""
