#!/bin/sh
# Installs the Debian packages tessera needs, only those missing. Prints what it does.
# fortunes: English text (/usr/share/games/fortunes) for the language-model demo and tests;
# python3-torch: the PyTorch side of tests/lm/export-torch.sh (a tessera-trained GPT loads into
# PyTorch with the same validation loss) and of the bench; libdnnl-dev: oneDNN, the host's bf16
# GEMMs. Extra packages may be named in TSR_EXTRA_DEBS.
set -e
pkgs="build-essential pkg-config ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo
      libclblast-dev libmpich-dev mpich libhwloc-dev hwloc libopenblas-dev libcjson-dev
      zlib1g-dev nettle-dev libcmocka-dev dataset-fashion-mnist clang libudev-dev fortunes
      python3-torch libdnnl-dev
      $TSR_EXTRA_DEBS"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "deps: all $(echo $pkgs | wc -w) packages present"
    exit 0
fi
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
