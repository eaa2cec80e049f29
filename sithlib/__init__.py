"""sithlib: the executable companion to three self-supervised-learning papers.

Layers (imports only point down): ``dgp``, ``losses``, ``models``, ``metrics`` (1);
``methods``, ``train`` (2); ``experiments``, ``results`` (3); ``cli`` (4).
"""

__version__ = "0.1.0"
