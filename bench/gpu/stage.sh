#!/bin/bash
# bench/gpu/stage.sh — prepares a GPU check on a machine that has the CUDA
# toolkit but no GPU (this project's build machine), for a lent GPU machine
# that has the driver and CUDA runtime but may lack the rest (OpenBLAS, HDF5,
# OpenMPI...). Builds, here:
#   build/cudav3     make CUDA=1 with -march=x86-64-v3 (runs on any AVX2 host):
#                    anyref, the device-capable tests, bench_llama, bench_encoders;
#   build/cudampi    make CUDA=1 MPI=1 (NCCL): anyref and test_train;
#   build/tests/test_mpi (plain; it only launches the binary it is given);
# then copies them, stripped, into .gpu/ with .gpu/libs.tar.xz (every shared
# library they load, but glibc, libstdc++ and the CUDA/NCCL ones the device
# has under /usr/local/cuda/lib64). On the device, from the repository root:
#   bash bench/gpu/stage.sh --run     (unpacks the libraries, runs run_gpu.sh
#                                      on the staged binaries into $OUT or .gpu/out)
# The device tool carries .gpu (ignored by git: list it in .git/info/exclude).
set -eu
cd "$(dirname "$0")/../.."
if [ "${1:-}" = "--run" ]; then
  mkdir -p .gpu/lib
  tar xJf .gpu/libs.tar.xz -C .gpu/lib
  export LD_LIBRARY_PATH=$PWD/.gpu/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib64/stubs
  OUT_DIR=${OUT:-.gpu/out} MPI_BUILD=.gpu/cudampi MPI_TEST=.gpu/tests/test_mpi bash bench/gpu/run_gpu.sh .gpu/cuda
  exit
fi
OPT="-O3 -march=x86-64-v3 -fno-trapping-math -fno-math-errno"
tests=$(sed -n '/^CUDA_TESTS :=/,/^TEST_BIN/p' Makefile | tr -d '\\' | sed 's/CUDA_TESTS :=//; /TEST_BIN/d')
make CUDA=1 BUILD=build/cudav3 OPT="$OPT" -j"$(nproc)" build/cudav3/anyref build/cudav3/bench/bench_llama \
     build/cudav3/bench/bench_encoders \
     $(for t in $tests; do echo build/cudav3/tests/test_$t; done)
make CUDA=1 MPI=1 BUILD=build/cudampi OPT="$OPT" -j"$(nproc)" build/cudampi/anyref build/cudampi/tests/test_train
make OPT="$OPT" -j"$(nproc)" build/tests/test_mpi
rm -rf .gpu   # this script owns .gpu: earlier stagings go
mkdir -p .gpu/cuda/tests .gpu/cuda/bench .gpu/cudampi/tests .gpu/tests .gpu/lib
cp build/cudav3/anyref .gpu/cuda/; cp build/cudav3/bench/bench_llama build/cudav3/bench/bench_encoders .gpu/cuda/bench/
for t in $tests; do cp build/cudav3/tests/test_$t .gpu/cuda/tests/; done
cp build/cudampi/anyref .gpu/cudampi/; cp build/cudampi/tests/test_train .gpu/cudampi/tests/
cp build/tests/test_mpi .gpu/tests/
find .gpu/cuda .gpu/cudampi .gpu/tests -type f -exec strip --strip-unneeded {} +
# the shared libraries the binaries load, but the C/C++ runtime and CUDA's own
for f in $(find .gpu/cuda .gpu/cudampi .gpu/tests -type f); do ldd "$f"; done | awk '/=> \//{print $3}' | sort -u |
  grep -v -E '/(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so|/usr/local/cuda' |
  while read -r l; do cp -L "$l" .gpu/lib/; done
tar cJf .gpu/libs.tar.xz -C .gpu/lib .
rm -rf .gpu/lib
du -sh .gpu
echo "staged: carry .gpu; on the device run: bash bench/gpu/stage.sh --run"
