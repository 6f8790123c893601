"""The architecture: plain data (the spec) that says what a network is and how to train it.

``ops`` holds one record per layer kind; ``spec`` the layers and the input they take, ``recipe``
the training recipe, ``candidate`` the two together (what a spec file holds). ``builder`` turns an
architecture into a torch module and counts its parameters and FLOPs without building it;
``describe`` gives its layer table in words; ``budget`` is the parameter-budget filter;
``presets`` the networks shipped as spec files. Nothing here knows of training or search.
"""

from nas.arch.spec import ArchSpec, Layer, bn, conv, dropout, dwconv, gap, leaky_relu, linear, maxpool, relu
from nas.arch.candidate import Candidate, load_spec_file
from nas.arch.recipe import MAX_EPOCHS, Recipe

__all__ = ["ArchSpec", "Candidate", "Layer", "MAX_EPOCHS", "Recipe", "bn", "conv", "dropout", "dwconv", "gap", "leaky_relu",
           "linear", "load_spec_file", "maxpool", "relu"]
