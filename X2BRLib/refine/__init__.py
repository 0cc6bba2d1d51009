"""Template refinement: deformable registration of bone template meshes onto a reconstruction.

``from X2BRLib.refine.cpd import deformable_cpd`` (imports torch and scipy lazily from here).
"""
