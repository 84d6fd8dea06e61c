#!/bin/sh
# Installs the Debian packages anyref needs, only those missing.
#   deps.sh build   — what `make`, `make test` and `make demo` need
#   deps.sh python  — PyTorch reference side for `make fixtures` and `make bench`
set -e
case "${1:-build}" in
  build)  pkgs="gcc make libopenblas-openmp-dev libhdf5-dev zlib1g-dev libxxhash-dev libfftw3-dev libsoxr-dev libjpeg62-turbo-dev libpng-dev libstemmer-dev libdnnl-dev wordnet-base libopenmpi-dev openmpi-bin" ;;
  python) pkgs="python3-torch python3-torchvision python3-h5py python3-numpy python3-sentencepiece python3-torchaudio python3-pil" ;;
  *) echo "deps.sh: unknown set '$1' (expected build or python)" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing missing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
