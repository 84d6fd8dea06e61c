# anyref — build, test, demo, bench.
#   make            build/anyref and build/libanyref.a (CPU backend: OpenBLAS + OpenMP)
#   make test       build and run every test (gradient checks, PyTorch parity, runtime)
#   make demo       build and run the embedded demo (scripts/demo.sh: the shapes world, train, eval, plots)
#   make bench      GEMM ceiling + kernel forward/backward throughput vs PyTorch
#   make deps       install missing Debian packages (apt-get), then nothing else
#   make fixtures   regenerate tests/fixtures/*.h5 with PyTorch (/usr/bin/python3)
#   make MPI=1      data-parallel build against OpenMPI (core/dist.c with MPI; into build/mpi/)
#   make CUDA=1     compile kernels/cuda/ with nvcc instead of kernels/cpu/, link cuBLAS (into build/cuda/)
#   make CUDA=1 MPI=1  both, and NCCL for the gradient all-reduce in device memory (one GPU per rank)
#   make fuzz       build the libFuzzer targets (clang)
#   make test SANITIZE=1   the whole suite built with ASan + UBSan into build-san/
#   make check      make test, then make test SANITIZE=1 (what CI runs)
#   make fuzz-long  libFuzzer run of every target (FUZZ_LONG_SECONDS each), corpus in tests/fuzz/corpus/
.DEFAULT_GOAL := all
.SUFFIXES:

CC      ?= gcc
# SANITIZE=1: every object, the library and the tests built with AddressSanitizer
# + UndefinedBehaviorSanitizer (UB aborts the test) into their own tree.
ifeq ($(SANITIZE),1)
  # the plain build's OPT: vectorised -O3 loops keep ASan's cost down
  BUILD ?= build-san
  CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  LDLIBS += -fsanitize=address,undefined
  # allocator_may_return_null: tests check that impossible sizes come back as NULL + an error
  export ASAN_OPTIONS ?= detect_leaks=1:allocator_may_return_null=1:detect_stack_use_after_return=0
  export LSAN_OPTIONS ?= suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
  export DEMO_TEST_STEPS ?= 300
  # OpenMP threads sleep at barriers instead of spinning: the instrumented
  # regions are slow enough that on a busy machine a spinning thread starved
  # the one it waited for (test_grounding measured on 2 cores: 16 s, and 58 s
  # while a compiler ran beside it; passive: 13 s both times)
  export OMP_WAIT_POLICY ?= passive
endif
# CUDA objects go to their own tree so CPU and CUDA builds never mix objects.
ifeq ($(CUDA),1)
  BUILD ?= build/cuda
else ifeq ($(MPI),1)
  BUILD ?= build/mpi
else
  BUILD ?= build
endif
OBLAS_LIB = /usr/lib/x86_64-linux-gnu/openblas-openmp
OBLAS_INC = /usr/include/x86_64-linux-gnu/openblas-openmp
HDF5_INC  = /usr/include/hdf5/serial
HDF5_LIB  = /usr/lib/x86_64-linux-gnu/hdf5/serial

# -fno-trapping-math/-fno-math-errno change no value (no FP-exception flags or
# errno are read anywhere) but let GCC if-convert and vectorise kernel loops.
OPT     ?= -O3 -march=native -fno-trapping-math -fno-math-errno
CFLAGS  += $(OPT) -std=gnu11 -fopenmp -Wall -Wextra -Wno-unused-parameter -g \
           -I. -I$(OBLAS_INC) -I$(HDF5_INC) -MMD -MP
LDLIBS  += -L$(OBLAS_LIB) -Wl,-rpath,$(OBLAS_LIB) -lopenblas -lstemmer \
           -L$(HDF5_LIB) -lhdf5 -lz -lm -fopenmp -lfftw3 -lsoxr -ljpeg -lpng16

CORE_SRC  := $(wildcard core/*.c)
KCPU_SRC  := $(wildcard kernels/cpu/*.c)
KSHARED   := $(wildcard kernels/*.c)   # backend-neutral composites
LIB_SRC   := $(CORE_SRC) $(wildcard data/*.c) $(wildcard checkpoints/*.c) $(wildcard model/*.c) $(wildcard optim/*.c) $(filter-out train/main.c,$(wildcard train/*.c)) $(wildcard eval/*.c)

# MPI=1: core/dist.c talks to OpenMPI (mpicc's flags, gcc stays the compiler).
ifeq ($(MPI),1)
  CFLAGS += -DANYREF_MPI=1 $(shell mpicc --showme:compile 2>/dev/null)
  LDLIBS += $(shell mpicc --showme:link 2>/dev/null)
endif

ifeq ($(CUDA),1)
  NVCC      ?= /usr/local/cuda/bin/nvcc
  CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90
  NVFLAGS   += -O3 -std=c++17 $(CUDA_ARCH) -I. -Xcompiler -fPIC
  KCUDA_SRC := $(wildcard kernels/cuda/*.cu)
  KOBJ      := $(patsubst %.cu,$(BUILD)/%.o,$(KCUDA_SRC))
  LDLIBS    += -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcublas -lcudart -lstdc++
  CFLAGS    += -DANYREF_CUDA=1
  ifeq ($(MPI),1)   # one GPU per rank: gradients all-reduced in device memory by NCCL
    CFLAGS  += -DANYREF_NCCL=1 -I/usr/local/cuda/include
    LDLIBS  += -lnccl
  endif
else
  KOBJ      := $(patsubst %.c,$(BUILD)/%.o,$(KCPU_SRC))
  ifneq ($(DNNL),0)   # oneDNN's bf16 matmuls for train.gemm = bf16 (DNNL=0: emulated with OpenBLAS)
    CFLAGS  += -DANYREF_DNNL=1
    LDLIBS  += -ldnnl
  endif
endif

LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC) $(KSHARED)) $(KOBJ)
LIB     := $(BUILD)/libanyref.a
BIN     := $(BUILD)/anyref
DEPS_OK := $(BUILD)/.deps-ok

ifeq ($(CUDA),1)
# On the GPU: every test that reaches the model's memory only through
# k_upload/k_download (the CUDA-vs-double-reference test, the PyTorch parity
# tests of every kernel, module and the whole AnyRef step, training, resume,
# faults and the demo). The others (finite-difference checks and tests that
# poke weights in host memory) are CPU-only; they run in the plain `make test`.
CUDA_TESTS := cuda_parity parity anyref_parity anyref_mm_parity llama_parity llama_recipe_parity \
              sam_decoder_parity clip_grad sam_image_encoder sam_image_encoder_grad generate checkpoint \
              train grounding train_sources faults demo bf16 flash_attention
TEST_BIN  := $(patsubst %,$(BUILD)/tests/test_%,$(CUDA_TESTS))
export ANYREF_BIN := $(BUILD)/anyref
else
TEST_BIN  := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
endif
# Linked into every test: the check framework and the HDF5 fixture readers.
TEST_LIB  := $(BUILD)/tests/testlib.o $(BUILD)/tests/h5fixture.o
BENCH_BIN := $(BUILD)/bench/bench_kernels

.PHONY: all test demo bench deps fixtures clean fuzz check fuzz-long
all: $(BIN) $(LIB)
ifeq ($(CUDA),1)
all: $(TEST_BIN)    # proves the CUDA objects link into a complete program
endif

# The deps step: checks with dpkg, installs only what is missing.
$(DEPS_OK): scripts/deps.sh
	@mkdir -p $(BUILD)
	@sh scripts/deps.sh build
	@touch $@
deps:
	@sh scripts/deps.sh build

$(BUILD)/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/train/main.o $(LIB)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(TEST_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(TEST_LIB) $(LIB) -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/cuda/%.c $(TEST_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(TEST_LIB) $(LIB) -o $@ $(LDLIBS)

$(TEST_LIB): $(BUILD)/tests/%.o: tests/%.c | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# $(FUZZ_SMOKE_BIN): the fuzz smoke binaries (defined, and made prerequisites, with the fuzz rules below)
test: $(TEST_BIN) $(BIN)
	@sh tests/run.sh $(TEST_BIN) $(FUZZ_SMOKE_BIN)

# The MPI variant of the program that tests/test_mpi.c launches with mpirun
# (always the plain, unsanitised build: OpenMPI's own allocations are not ours
# to check). Built by a sub-make so that its objects live in build/mpi/.
ifneq ($(CUDA),1)
ifneq ($(MPI),1)
.PHONY: mpi-bin
mpi-bin: | $(DEPS_OK)
	@$(MAKE) --no-print-directory MPI=1 SANITIZE= BUILD=build/mpi build/mpi/anyref
test: mpi-bin
$(BUILD)/tests/test_mpi: | mpi-bin
# Step time of the demo model on 1 and 2 ranks, bytes all-reduced, communication hidden (bench/run_mpi.sh).
.PHONY: bench-mpi
bench: bench-mpi
bench-mpi: mpi-bin
	@sh bench/run_mpi.sh build/mpi/anyref $(BUILD)/bench
endif
endif

# What CI runs (.ci/run): the plain suite, then the whole suite again under
# ASan + UBSan, then, where the CUDA toolkit is installed, the CUDA build with
# its device-capable tests and the CUDA + MPI (NCCL) build, compiled and linked
# only (CI has no GPU: bench/gpu/ runs them on one).
check:
	$(MAKE) test
	$(MAKE) test SANITIZE=1
	@if [ -x "$${NVCC:-/usr/local/cuda/bin/nvcc}" ]; then \
	  $(MAKE) CUDA=1 && echo "check: make CUDA=1 builds (not run: no GPU here)" && \
	  if command -v mpicc > /dev/null && [ -f /usr/local/cuda/include/nccl.h ]; then \
	    $(MAKE) CUDA=1 MPI=1 BUILD=build/cudampi build/cudampi/anyref build/cudampi/tests/test_train && \
	    echo "check: make CUDA=1 MPI=1 builds"; \
	  else echo "check: no mpicc or NCCL headers: make CUDA=1 MPI=1 skipped"; fi; \
	else echo "check: no CUDA toolkit ($${NVCC:-/usr/local/cuda/bin/nvcc}): make CUDA=1 skipped"; fi

demo: $(BIN)
	@sh scripts/demo.sh $(BIN)

$(BENCH_BIN): bench/bench_kernels.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(LDLIBS)

$(BUILD)/bench/bench_llama: bench/bench_llama.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(LDLIBS)

$(BUILD)/bench/bench_sam: bench/bench_sam.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(LDLIBS)

# COCO instances.json load time (run by hand: build/bench/bench_coco_load FILE); not part of `make bench`.
$(BUILD)/bench/bench_coco_load: bench/bench_coco_load.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(LDLIBS)

# Forward throughput of the SAM image encoder (ViT-B/L/H) and the CLIP ViT-L/14 tower.
$(BUILD)/bench/bench_encoders: bench/bench_encoders.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(LDLIBS)

# Samples/s of the RefCOCO sample pipeline through the live loader (data/loader.h).
$(BUILD)/bench/bench_pipeline: bench/bench_pipeline.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(LDLIBS)

bench: $(BENCH_BIN) $(BUILD)/bench/bench_llama $(BUILD)/bench/bench_sam $(BUILD)/bench/bench_encoders $(BUILD)/bench/bench_pipeline $(BUILD)/bench/bench_generate $(BIN)
	@sh scripts/deps.sh python
	@sh bench/run.sh $(BENCH_BIN) $(BUILD)/bench
	@sh bench/run_llama.sh $(BUILD)/bench/bench_llama $(BUILD)/bench
	@sh bench/run_sam.sh $(BUILD)/bench/bench_sam $(BUILD)/bench
	@sh bench/run_encoders.sh $(BUILD)/bench/bench_encoders $(BIN) $(BUILD)/bench
	@sh bench/run_pipeline.sh $(BUILD)/bench/bench_pipeline $(BUILD)/bench
	@sh bench/run_generate.sh $(BUILD)/bench/bench_generate $(BUILD)/bench
	@sh bench/run_eval.sh $(BIN) $(BUILD)/bench

# Tokens/s of greedy generation: KV cache against recomputing the prefix.
$(BUILD)/bench/bench_generate: bench/bench_generate.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(LDLIBS)

fixtures:
	@sh scripts/deps.sh python
	/usr/bin/python3 tests/ref/kernels_ref.py tests/fixtures/kernels.h5
	/usr/bin/python3 tests/ref/llama_ref.py tests/fixtures/llama.h5
	/usr/bin/python3 tests/ref/llama_recipe_ref.py tests/fixtures/llama_recipe.h5
	/usr/bin/python3 tests/ref/sam_decoder_ref.py tests/fixtures/sam_decoder.h5
	/usr/bin/python3 tests/ref/names_ref.py tests/fixtures/names_anyref_keys.txt
	/usr/bin/python3 tests/ref/make_safetensors_fixtures.py tests/fixtures/safetensors
	/usr/bin/python3 tests/ref/make_conversation_fixtures.py tests/fixtures
	/usr/bin/python3 tests/ref/sam_prompt_ref.py tests/fixtures/sam_prompt.h5
	/usr/bin/python3 tests/ref/clip_ref.py tests/fixtures/clip.h5
	/usr/bin/python3 tests/ref/clip_grad_ref.py tests/fixtures/clip_grad.h5
	/usr/bin/python3 tests/ref/imagebind_audio_ref.py tests/fixtures/imagebind_audio.h5
	/usr/bin/python3 tests/ref/sam_image_encoder_ref.py tests/fixtures/sam_image_encoder.h5
	/usr/bin/python3 tests/ref/sam_post_ref.py tests/fixtures/sam_post.h5
	/usr/bin/python3 tests/ref/seg_head_ref.py tests/fixtures/seg_head.h5
	/usr/bin/python3 tests/ref/anyref_step_ref.py tests/fixtures/anyref_step.h5
	/usr/bin/python3 tests/ref/anyref_mm_ref.py tests/fixtures/anyref_mm.h5
	/usr/bin/python3 tests/ref/audio_ref.py tests/fixtures/audio.h5
	/usr/bin/python3 tests/ref/avs_ref.py tests/fixtures/avsbench
	/usr/bin/python3 tests/ref/avs_metrics_ref.py tests/fixtures/avs_metrics.h5
	/usr/bin/python3 tests/ref/image_ref.py tests/fixtures
	/usr/bin/python3 tests/ref/refer_ref.py tests/fixtures/refer
	$${COCO_PYTHON:-/usr/bin/python3} tests/ref/coco_ref.py tests/fixtures    # needs pycocotools 2.0.7 (PyPI)
	$${CAPM_PYTHON:-/usr/bin/python3} tests/ref/caption_metrics_ref.py tests/fixtures/caption_metrics.json    # needs pycocoevalcap (PyPI) in a venv and java
	$${CAPM_PYTHON:-/usr/bin/python3} tests/ref/meteor_ref.py tests/fixtures/meteor.json    # needs pycocoevalcap (PyPI) in a venv and java
	/usr/bin/python3 tests/ref/refseg_metrics_ref.py tests/fixtures/refseg_metrics.h5
	$${COCO_PYTHON:-/usr/bin/python3} tests/ref/refer_join_ref.py tests/fixtures/refer_join    # needs pycocotools 2.0.7 (PyPI)
	$${COCO_PYTHON:-/usr/bin/python3} tests/ref/custom_jsonl_ref.py tests/fixtures/custom     # needs pycocotools 2.0.7 (PyPI)
	/usr/bin/python3 tests/ref/sam_image_encoder_grad_ref.py tests/fixtures/sam_image_encoder_grad.h5
	/usr/bin/python3 tests/ref/torch_ckpt_ref.py tests/fixtures/torch_ckpt

# Each fuzz target links core/ plus the parser sources it names in FUZZ_EXTRA_<target>.
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_EXTRA_fuzz_config :=
FUZZ_EXTRA_fuzz_tokenizer := data/tokenizer.c data/tokenizer_spm.c data/tokenizer_hf.c data/protobuf.c
FUZZ_EXTRA_fuzz_safetensors = checkpoints/safetensors.c model/params.c kernels/bf16_host.c checkpoints/torch_ckpt.c data/pickle.c $(shell $(CC) -print-file-name=libz.so)
FUZZ_EXTRA_fuzz_torch_ckpt = checkpoints/torch_ckpt.c data/pickle.c $(shell $(CC) -print-file-name=libz.so)
FUZZ_EXTRA_fuzz_wav := data/wav.c
FUZZ_EXTRA_fuzz_image = data/image.c $(shell $(CC) -print-file-name=libjpeg.so) $(shell $(CC) -print-file-name=libpng16.so)
FUZZ_EXTRA_fuzz_pickle := data/pickle.c data/refer.c
FUZZ_EXTRA_fuzz_coco := data/coco.c data/rle.c
FUZZ_EXTRA_fuzz_csv := data/csv.c
FUZZ_EXTRA_fuzz_jsonl = data/custom_jsonl.c data/rle.c data/image.c data/wav.c $(shell $(CC) -print-file-name=libjpeg.so) $(shell $(CC) -print-file-name=libpng16.so)
FUZZ_EXTRA_fuzz_checkpoint := core/h5util.c checkpoints/checkpoint.c model/params.c kernels/bf16_host.c $(HDF5_LIB)/libhdf5.so
FUZZ_EXTRA_fuzz_conversation := data/conversation.c data/tokenizer.c data/tokenizer_spm.c data/tokenizer_hf.c data/protobuf.c
fuzz: $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
.SECONDEXPANSION:
FUZZ_CORE := $(filter-out core/h5util.c,$(CORE_SRC))   # parsers need no HDF5
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_CORE) $$(FUZZ_EXTRA_$$*)
	@mkdir -p $(dir $@)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -I$(HDF5_INC) $^ -o $@ -Wl,-rpath,$(HDF5_LIB) -lm

# Fuzz smoke for `make test` (no clang needed): tests/fuzz/driver.c's main()
# mutates committed fixtures for a few seconds per target (FUZZ_SMOKE_SECONDS)
# and calls the same LLVMFuzzerTestOneInput; gcc builds the target and its
# FUZZ_CORE / FUZZ_EXTRA_fuzz_<target> sources with ASan + UBSan (objects in
# $(BUILD)/fuzz-smoke/, shared by the targets) into $(BUILD)/tests/test_fuzz_<target>.
# (not under SANITIZE=1: the plain `make test` already runs them with ASan + UBSan)
ifneq ($(CUDA),1)
ifneq ($(SANITIZE),1)
FUZZ_SMOKE_BIN := $(patsubst tests/fuzz/fuzz_%.c,$(BUILD)/tests/test_fuzz_%,$(FUZZ_SRC))
test: $(FUZZ_SMOKE_BIN)
endif
endif
FUZZ_SMOKE_CFLAGS := -g -O1 -std=gnu11 -fsanitize=address,undefined -fno-sanitize-recover=all \
                     -fno-omit-frame-pointer -I. -I$(HDF5_INC) -MMD -MP
FUZZ_SMOKE_OBJ = $(patsubst %.c,$(BUILD)/fuzz-smoke/%.o,$(filter %.c,$(1)))
# the libraries FUZZ_EXTRA names by path (.../libjpeg.so), as -l flags: found at link time, after the deps step
FUZZ_SMOKE_LIBS = $(patsubst lib%.so,-l%,$(notdir $(filter-out %.c,$(1))))
.PRECIOUS: $(BUILD)/fuzz-smoke/%.o
$(BUILD)/fuzz-smoke/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CC) $(FUZZ_SMOKE_CFLAGS) -c $< -o $@
$(BUILD)/tests/test_fuzz_%: $$(call FUZZ_SMOKE_OBJ,tests/fuzz/driver.c tests/fuzz/fuzz_$$*.c $(FUZZ_CORE) $$(FUZZ_EXTRA_fuzz_$$*))
	@mkdir -p $(dir $@)
	$(CC) -fsanitize=address,undefined $^ -o $@ -L$(HDF5_LIB) -Wl,-rpath,$(HDF5_LIB) $(call FUZZ_SMOKE_LIBS,$(FUZZ_EXTRA_fuzz_$*)) -lm

# The long libFuzzer run (clang): FUZZ_LONG_SECONDS (default 240) per target,
# 2 at a time; the minimised corpus goes to tests/fuzz/corpus/<target>/ (commit
# it), crashes are reported (tests/fuzz/long.sh).
fuzz-long: $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC)) $(patsubst tests/fuzz/fuzz_%.c,$(BUILD)/tests/test_fuzz_%,$(FUZZ_SRC))
	@sh tests/fuzz/long.sh $(BUILD)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
