"""X2B: radiograph -> 3D bone occupancy network (model, data, training, weights, MISE).

Submodules import torch lazily from here: ``from X2BRLib.x2b import model``.
"""
