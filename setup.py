"""Packaging beyond pyproject.toml (which holds the metadata): the wheel carries the shipped
files. The repository's ``Resources/`` (weights with their model cards, the skeleton template,
the scale prior, the sample film and CT; not the Slicer-only icon and .ui) is packaged as ``X2BRLib/Resources/``,
where ``X2BRLib/shipped.py`` finds it in an installed package."""
from setuptools import find_packages, setup

SHIPPED = ["Models/*/*", "Template/*", "SampleData/*", "Scale/*"]

setup(
    packages=find_packages(include=["X2BRLib", "X2BRLib.*"]) + ["X2BRLib.Resources"],
    package_dir={"X2BRLib.Resources": "Resources"},
    package_data={"X2BRLib.Resources": SHIPPED},
)
