#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels `scripts/gpu_detect.sh install` installs on the GPU
# machine, which has torch, torchvision, timm, opencv, scipy, matplotlib, numpy and pillow but
# not ultralytics, and no internet. Versions are the ones requirements.txt's ultralytics==8.4.190
# resolved to in our .venv. Its Requires-Dist, and why each is (not) here:
#   numpy, matplotlib, opencv-python, pillow, torch, torchvision: on the GPU image (not downloaded)
#   pyyaml, requests (+ urllib3, idna, certifi, charset-normalizer): usually there; the wheels are
#     small, so they come anyway (requests is only imported on download paths, which stay unused)
#   polars: NOT downloaded (54 MB per Python version): its one use in training, reading
#     results.csv, is replaced by the csv module (X2BRLib/detect/train.py, _read_results_csv)
#   psutil: RAM checks (cache=ram), system logging
#   ultralytics-thop: GFLOPs in model summaries    nvidia-ml-py: GPU queries (pynvml)
#   pydicom: not ultralytics', X2BR's: lets `x2br detect` read the sample DICOM film there
#   ultralytics-platform (Python >= 3.11 only): NOT downloaded; only imported for
#     `from ultralytics import Platform`, which X2BR never does.
# The GPU image's Python is not known here (3.10, 3.11 or 3.12): pure-Python wheels are
# py3-none-any; psutil is abi3; PyYAML and charset-normalizer are fetched for each version
# (pip picks the one matching the running Python at install time).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
DEST=${DEST:-.whl}
mkdir -p "$DEST"
PLATFORMS="--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64"
$PIP download -q --no-deps --only-binary=:all: -d "$DEST" \
  ultralytics==8.4.190 ultralytics-thop==2.2.3 nvidia-ml-py==13.615.71 requests==2.34.2 urllib3==2.8.0 \
  idna==3.20 certifi==2026.10.19.post1 pydicom==3.0.2
for py in 3.10 3.11 3.12; do
  $PIP download -q --no-deps --only-binary=:all: $PLATFORMS --implementation cp --python-version $py \
    -d "$DEST" psutil==7.2.2 PyYAML==6.0.4 charset-normalizer==3.5.2
done
ls -la "$DEST"
du -sh "$DEST"
