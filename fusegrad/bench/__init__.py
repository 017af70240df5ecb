"""``fusegrad bench``: the model zoo and the harness that times it beside PyTorch."""
