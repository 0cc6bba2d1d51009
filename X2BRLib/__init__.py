"""X2BRLib: Qt-free core of X2BR, 3D bone reconstruction from one chest radiograph."""
__version__ = "0.1.0"
