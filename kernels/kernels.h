/* kernels/kernels.h — the ONE header of anyref's compute primitives.
 *
 * Every primitive is a forward/backward pair with plain pointers and explicit
 * dimensions, in the style of llm.c. Model code calls only these functions and
 * never touches tensor memory itself, so the same model file runs on the CPU
 * backend (kernels/cpu/, OpenBLAS + OpenMP) and on the CUDA backend
 * (kernels/cuda/, cuBLAS), chosen at build time. Pointers are host memory on
 * the CPU backend and device memory on the CUDA backend; allocate them with
 * k_malloc() so the model never needs to know which.
 *
 * Layout: row-major, float32, int32 indices. "N" is a count of rows (tokens),
 * shapes are given in [brackets] beside every argument list.
 *
 * GRADIENT CONVENTION (kept by every backward in this file):
 *   - Every gradient output ACCUMULATES: backward does `d += ...`, it never
 *     overwrites. Gradient buffers are zeroed once per optimiser step (or per
 *     micro-batch group). Residual branches, the refocusing branch and
 *     gradient accumulation across micro-batches therefore need no special code.
 *   - Any gradient output may be NULL: that gradient is not wanted (a frozen
 *     weight, an input that is data) and its work is skipped.
 *   - Forward outputs are overwritten, never accumulated.
 *   - Forward and backward never alias unless a comment says so.
 *   - Losses return their value; their backward takes `dloss`, the gradient of
 *     the final objective with respect to the returned value (the loss weight).
 *
 * Kernels do no allocation inside a step; scratch memory is passed in by the
 * caller (sized by the *_scratch_floats() helpers where one is needed).
 */
#ifndef ANYREF_KERNELS_H
#define ANYREF_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Backend memory and control                                               */
/* ------------------------------------------------------------------------ */
const char *k_backend_name(void);          /* "cpu" or "cuda" */
void *k_malloc(size_t bytes);               /* NULL on failure; 64-byte aligned */
void  k_free(void *p);
void  k_zero(void *p, size_t bytes);
void  k_copy(void *dst, const void *src, size_t bytes);       /* same space */
void  k_upload(void *dst, const void *host_src, size_t bytes); /* host -> backend */
void  k_download(void *host_dst, const void *src, size_t bytes);/* backend -> host */
void  k_sync(void);
int   k_num_threads(void);
/* The first backend failure since start (a CUDA launch or cuBLAS error, a
 * failed internal workspace allocation), or NULL. Kernels return nothing, so
 * the training loop checks this once per step; the CPU backend never fails. */
const char *k_error(void);
void  k_set_num_threads(int n);
/* The arithmetic of every GEMM (matmul, linear, LoRA, convolutions, the
 * attention products); storage stays fp32 except bf16-stored frozen weights:
 *   "fp32"  plain fp32 (the default);
 *   "tf32"  CUDA: inputs rounded to TF32 inside cuBLAS on the tensor cores,
 *           fp32 accumulation (relative error ~3e-4; 5x faster on an H200);
 *   "bf16"  the products with a bf16-stored weight (linear_bf16_*) round
 *           their other operand (the activations forward, the output
 *           gradient backward) to bf16 and multiply bf16 x bf16 with fp32
 *           accumulation: CUDA on the bf16 tensor cores (cublasGemmEx with
 *           bf16 operands), every other GEMM as in "tf32"; the CPU backend
 *           runs them as oneDNN bf16 matmuls where oneDNN has a fast kernel
 *           (AVX512-BF16 / AMX), else emulates them (the same roundings, fp32
 *           products: the same numbers up to summation order, no speed-up);
 *           its other GEMMs stay fp32, so CPU and GPU runs can be compared;
 *   "fp16"  the same for fp16-stored weights (linear_f16_*): the other
 *           operand rounded to fp16 (|x| >= 65520 becomes ±Inf: the caller's
 *           loss scaling handles overflow), fp16 x fp16 products with fp32
 *           accumulation (CUDA_R_16F operands), other GEMMs as in "tf32".
 * (Asking cuBLAS for COMPUTE_32F_FAST_16BF with fp32 operands ran its TF32
 * kernels on an H200, which is why "bf16" needs the bf16-stored operand.)
 * Returns 0, or -1 when the backend lacks the mode (nothing changes). Both
 * backends start in the mode named by $ANYREF_GEMM, else fp32. */
int   k_set_gemm_mode(const char *mode);
const char *k_gemm_mode(void);
/* The GEMMs that "bf16" / "fp16" leave in 32 bits: on the GPU TF32 (the
 * default, for speed) or, after k_set_gemm_rest_fp32(1) or with
 * $ANYREF_GEMM_REST=fp32, plain fp32, which leaves the 16-bit products as
 * the mode's only rounding: how the parity tests check those products on the
 * GPU at the CPU's bounds (TF32 noise flips bf16 roundings of the activations
 * downstream). Applies to the current and later modes. The CPU's are fp32
 * always: a no-op there. */
void  k_set_gemm_rest_fp32(int on);
/* How the current mode's 16-bit products run, for logs: "" (fp32 / tf32, or
 * CUDA's tensor cores), "emulated: same numbers, no speed-up" (CPU without a
 * fast bf16 kernel, fp16), or the CPU's oneDNN kernel in bf16 mode. */
const char *k_gemm_detail(void);
/* Bytes free and in all on the backend's memory (CUDA: the device; CPU: the
 * machine's RAM as sysconf reports it). 0 on success. */
int   k_mem_info(size_t *free_bytes, size_t *total_bytes);

/* ------------------------------------------------------------------------ */
/* Dense algebra                                                            */
/* ------------------------------------------------------------------------ */
/* C[M,N] = alpha * op(A) @ op(B) + beta * C, op(X) = X or X^T.
 * A is [M,K] (ta=0) or [K,M] (ta=1); B is [K,N] (tb=0) or [N,K] (tb=1). */
void matmul(float *C, const float *A, const float *B, int M, int N, int K,
            int ta, int tb, float alpha, float beta);
/* out[M,N] = op(A) @ op(B); backward: dA += dC @ op(B)^T (in A's layout), dB likewise. */
void matmul_forward(float *C, const float *A, const float *B, int M, int N, int K, int ta, int tb);
void matmul_backward(float *dA, float *dB, const float *dC, const float *A, const float *B,
                     int M, int N, int K, int ta, int tb);

/* out[N,OUT] = in[N,IN] @ w[OUT,IN]^T + b[OUT]   (PyTorch nn.Linear layout; b may be NULL) */
void linear_forward(float *out, const float *in, const float *w, const float *b, int N, int IN, int OUT);
/* din[N,IN] += dout @ w;  dw[OUT,IN] += dout^T @ in;  db[OUT] += colsum(dout) */
void linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                     const float *w, int N, int IN, int OUT);

/* LoRA linear: out = in @ w^T + b + scale * ((in ⊙ mask) @ A^T) @ B^T
 *   w[OUT,IN] (frozen base, dw may still be requested), A[R,IN], B[OUT,R],
 *   rank 1 <= R <= 4096.
 *   mask[N,IN] holds 0 or 1/(1-p) (from dropout_mask) or is NULL (no dropout).
 *   Saved for backward: xd[N,IN] = in ⊙ mask (unused and may be NULL when
 *   mask is NULL) and u[N,R] = xd @ A^T.
 *   w may be NULL (a base stored otherwise, e.g. linear_bf16_forward): out
 *   must then already hold the base product, forward adds the LoRA term to
 *   it (b is ignored), and backward leaves the base's gradients (din's base
 *   term, dw, db) to the caller. */
void lora_forward(float *out, float *xd, float *u, const float *in, const float *mask,
                  const float *w, const float *b, const float *A, const float *B,
                  float scale, int N, int IN, int OUT, int R);
void lora_backward(float *din, float *dw, float *db, float *dA, float *dB,
                   const float *dout, const float *in, const float *xd, const float *u,
                   const float *mask, const float *w, const float *A, const float *B,
                   float scale, int N, int IN, int OUT, int R);
/* ------------------------------------------------------------------------ */
/* 16-bit storage of frozen weights (bf16, fp16)                            */
/* ------------------------------------------------------------------------ */
/* A bf16 value is the upper 16 bits of an IEEE-754 binary32 (PyTorch's
 * torch.bfloat16). Frozen weights may be stored this way (half the memory);
 * the products below widen them to fp32 inside (exactly: every bf16 is a
 * float) and compute in the GEMM mode (k_set_gemm_mode), so a bf16-stored
 * weight gives the result of the fp32 product with the widened weight.
 * Conversions work on backend memory; float -> bf16 rounds to nearest even,
 * keeps ±Inf and signed zeros, and turns every NaN into a quiet NaN. */
typedef uint16_t bf16_t;
void convert_f32_to_bf16(bf16_t *dst, const float *src, size_t n);
void convert_bf16_to_f32(float *dst, const bf16_t *src, size_t n);
/* Host-side helpers with the same rounding (loaders, tests). */
void convert_f32_to_bf16_host(bf16_t *dst, const float *src, size_t n);
void convert_bf16_to_f32_host(float *dst, const bf16_t *src, size_t n);
/* IEEE binary16 storage, the same way (GPUs without bf16): round to nearest
 * even, values of magnitude 65520 and above become ±Inf, subnormals kept. */
typedef uint16_t f16_t;
void convert_f32_to_f16(f16_t *dst, const float *src, size_t n);
void convert_f16_to_f32(float *dst, const f16_t *src, size_t n);
void convert_f32_to_f16_host(f16_t *dst, const float *src, size_t n);
void convert_f16_to_f32_host(float *dst, const f16_t *src, size_t n);
/* out[N,OUT] = in[N,IN] @ w[OUT,IN]^T + b[OUT], w in bf16 (b may be NULL).
 * The backend widens w in row blocks into an internal workspace of bounded
 * size (never the whole matrix at once). */
void linear_bf16_forward(float *out, const float *in, const bf16_t *w, const float *b, int N, int IN, int OUT);
/* din[N,IN] += dout @ w;  db[OUT] += colsum(dout)  (din, db may be NULL; a
 * bf16 weight is frozen, so there is no dw). */
void linear_bf16_backward(float *din, float *db, const float *dout, const bf16_t *w, int N, int IN, int OUT);
/* The same with an fp16-stored weight. */
void linear_f16_forward(float *out, const float *in, const f16_t *w, const float *b, int N, int IN, int OUT);
void linear_f16_backward(float *din, float *db, const float *dout, const f16_t *w, int N, int IN, int OUT);
/* out[N,OUT] = act(in W^T + b) with W 16-bit (fp16: IEEE half, else bf16):
 * linear_bf16_forward / linear_f16_forward followed by gelu_forward
 * (act K_ACT_GELU) or quick_gelu_forward (K_ACT_QUICK_GELU) — the frozen
 * encoders' MLP first layer, whose pre-activation nothing keeps. Fused where
 * the backend can: on the CPU in GEMM mode bf16 with a bf16 weight, oneDNN's
 * bias and eltwise post-ops on the fp32 accumulator (its own erf / sigmoid,
 * within a few 1e-7 of the kernels'; one pass over out instead of four);
 * elsewhere the two kernels in turn. */
enum { K_ACT_GELU = 1, K_ACT_QUICK_GELU = 2 };
void linear_half_act_forward(float *out, const float *in, const uint16_t *w, int fp16, const float *b, int N, int IN,
                             int OUT, int act);
/* The weight gradient of a product run in 16 bits from a bf16 copy of a
 * trainable fp32 weight (model/llama.c's lm_head in GEMM mode bf16, as
 * autocast runs it): dw[OUT,IN] += dout^T @ in with both operands rounded to
 * bf16, fp32 accumulation (oneDNN or emulated on the CPU, tensor cores on
 * CUDA). In the other GEMM modes the fp32 product of linear_backward. */
void linear_bf16_backward_weight(float *dw, const float *dout, const float *in, int N, int IN, int OUT);

/* Fills mask[n] with 0 (probability p) or 1/(1-p), from a counter-based hash of
 * (seed, index): deterministic and independent of the thread count. */
void dropout_mask(float *mask, size_t n, float p, uint64_t seed);

/* out[N,D] = table[ids[n], :];  dtable[ids[n], :] += dout[n, :]
 * ids must be < V (the caller validates token ids); a row with ids[n] < 0 is
 * skipped by both: forward leaves out[n] as it is (a spliced feature row the
 * caller fills) and backward sends it nowhere. */
void embedding_forward(float *out, const int *ids, const float *table, int N, int D);
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int D);

/* ------------------------------------------------------------------------ */
/* Normalisation                                                            */
/* ------------------------------------------------------------------------ */
/* RMSNorm: out = in * rstd * w, rstd[n] = 1/sqrt(mean(in^2) + eps) (saved). */
void rmsnorm_forward(float *out, float *rstd, const float *in, const float *w, float eps, int N, int D);
void rmsnorm_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                      const float *rstd, int N, int D);
/* LayerNorm over the last dim D: out = (in-mean)*rstd*w + b (w, b may be NULL). */
void layernorm_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                       const float *b, float eps, int N, int D);
void layernorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, const float *mean, const float *rstd, int N, int D);
/* LayerNorm2d (SAM): in[B,C,HW] normalised over C at each of the HW pixels;
 * w[C], b[C]; mean/rstd are [B,HW]. */
void layernorm2d_forward(float *out, float *mean, float *rstd, const float *in, const float *w,
                         const float *b, float eps, int B, int C, int HW);
void layernorm2d_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                          const float *w, const float *mean, const float *rstd, int B, int C, int HW);

/* ------------------------------------------------------------------------ */
/* Position encoding and attention                                          */
/* ------------------------------------------------------------------------ */
/* RoPE, Hugging Face rotate-half convention, on in[N, H, hd] with positions pos[N]:
 *   for i < hd/2, f = pos * theta^(-2i/hd):
 *     out[i]      = x[i] cos f - x[i+hd/2] sin f
 *     out[i+hd/2] = x[i+hd/2] cos f + x[i] sin f
 * backward applies the inverse rotation to dout and accumulates into din. */
void rope_forward(float *out, const float *in, const int *pos, float theta, int N, int H, int hd);
void rope_backward(float *din, const float *dout, const int *pos, float theta, int N, int H, int hd);

/* Multi-head scaled-dot-product attention with grouped-query heads.
 *   q[B,T,Hq,hd], k,v[B,S,Hkv,hd], out[B,T,Hq,hd]; Hq % Hkv == 0 and query head
 *   h reads key/value head h / (Hq/Hkv).
 *   att[B,Hq,T,S] receives the attention probabilities (saved for backward and
 *   readable by the caller, e.g. for refocusing; masked entries are exactly 0).
 *   causal: key j is visible to query t iff j <= t + (S - T).
 *   key_len[B] (may be NULL): keys j >= key_len[b] are padding and invisible.
 *   A query row that sees no key produces zeros (and zero probabilities).
 *   scale: usually 1/sqrt(hd). */
void attention_forward(float *out, float *att, const float *q, const float *k, const float *v,
                       const int *key_len, int causal, float scale,
                       int B, int T, int S, int Hq, int Hkv, int hd);
/* datt_extra[B,Hq,T,S] (may be NULL): an extra gradient on the probabilities
 * (e.g. from refocusing), added to the gradient flowing from `out`.
 * scratch: attention_scratch_floats() floats. dq, dk, dv accumulate. */
size_t attention_scratch_floats(int B, int T, int S, int Hq);
void attention_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout,
                        const float *datt_extra, const float *att,
                        const float *q, const float *k, const float *v, float scale,
                        int B, int T, int S, int Hq, int Hkv, int hd);

/* Memory-efficient (flash-style) attention: the function of attention_forward
 * without keeping the probabilities. Forward keeps out and lse[B,Hq,T], each
 * query row's log-sum-exp of its scaled visible scores (-INFINITY for a row
 * that sees no key); backward recomputes the probabilities block by block
 * from q, k and lse (P = exp(scale q·k - lse)) and takes the softmax's row
 * term from out (rowsum(dout ⊙ out)). Only blocks of query rows are held at a
 * time, in scratch: attention_flash_scratch_floats() floats (on the CPU about
 * B·Hq·64·S, against B·Hq·T·S for att plus as much scratch). Same masks,
 * layouts and accumulation (dq, dk, dv +=) as attention_forward / _backward;
 * no extra gradient on the probabilities. */
size_t attention_flash_scratch_floats(int B, int T, int S, int Hq, int Hkv);
void attention_flash_forward(float *out, float *lse, float *scratch, const float *q, const float *k, const float *v,
                             const int *key_len, int causal, float scale,
                             int B, int T, int S, int Hq, int Hkv, int hd);
void attention_flash_backward(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *out,
                              const float *lse, const float *q, const float *k, const float *v, const int *key_len,
                              int causal, float scale, int B, int T, int S, int Hq, int Hkv, int hd);

/* Selected rows of the flash attention's probabilities, recomputed from q, k
 * and lse: rows[n] (backend memory, distinct) = b*T + t, and prow[n, Hq, S]
 * holds query t of sample b's probabilities over the keys (0 where masked),
 * as att[b, :, t, :] of attention_forward would. Backward takes a gradient
 * dprow[n, Hq, S] on them through the softmax, dS = prow ⊙ (dprow - Σ_j
 * dprow⊙prow), into dq[row] += scale dS k and dk += scale dSᵀ q[row] (the
 * refocusing term attention_backward's datt_extra carries, for these rows). */
void attention_rows_forward(float *prow, const int *rows, int n, const float *q, const float *k, const float *lse,
                            const int *key_len, int causal, float scale, int B, int T, int S, int Hq, int Hkv, int hd);
void attention_rows_backward(float *dq, float *dk, const float *dprow, const float *prow, const int *rows, int n,
                             const float *q, const float *k, float scale, int B, int T, int S, int Hq, int Hkv, int hd);

/* Row softmax: out[N,C] = softmax(in[N,C]); din += out ⊙ (dout - Σ dout⊙out). */
void softmax_forward(float *out, const float *in, int N, int C);
void softmax_backward(float *din, const float *dout, const float *out, int N, int C);

/* ------------------------------------------------------------------------ */
/* Element-wise                                                             */
/* ------------------------------------------------------------------------ */
/* out[n] = f(in[n]); din[n] += dout[n] * f'(in[n]). */
void silu_forward(float *out, const float *in, size_t n);
void silu_backward(float *din, const float *dout, const float *in, size_t n);
void gelu_forward(float *out, const float *in, size_t n);        /* exact, erf */
void gelu_backward(float *din, const float *dout, const float *in, size_t n);
void quick_gelu_forward(float *out, const float *in, size_t n);  /* x*sigmoid(1.702x) */
void quick_gelu_backward(float *din, const float *dout, const float *in, size_t n);
void relu_forward(float *out, const float *in, size_t n);
void relu_backward(float *din, const float *dout, const float *in, size_t n);
/* SwiGLU: out = silu(gate) * up (LLaMA MLP). */
void swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n);
/* Residual add: out = a + b; da += dout, db += dout. out may alias a or b. */
void add_forward(float *out, const float *a, const float *b, size_t n);
void add_backward(float *da, float *db, const float *dout, size_t n);
/* y += alpha * x (gradient plumbing, e.g. scaling a branch). */
void axpy(float *y, const float *x, float alpha, size_t n);

/* ------------------------------------------------------------------------ */
/* Losses                                                                   */
/* ------------------------------------------------------------------------ */
/* Fused softmax + cross-entropy over a vocabulary of V, ignore_index (-100):
 *   returns the mean of -log softmax(logits[n])[targets[n]] over rows whose
 *   target != ignore_index (0 when there are none); *count gets that number.
 *   lse[N] saves the log-sum-exp of each row for backward.
 *   Targets outside [0,V) other than ignore_index must be rejected by the caller. */
float softmax_xent_forward(float *lse, int *count, const float *logits, const int *targets,
                           int N, int V, int ignore_index);
/* dlogits[n] += dloss/count * (softmax(logits[n]) - onehot(targets[n])) */
void softmax_xent_backward(float *dlogits, const float *logits, const float *lse,
                           const int *targets, float dloss, int count,
                           int N, int V, int ignore_index);
/* BCE with logits, mean over n: mean(softplus(x) - x*y). */
float bce_logits_forward(const float *x, const float *y, size_t n);
void  bce_logits_backward(float *dx, const float *x, const float *y, float dloss, size_t n);
/* Dice as the official LISA/AnyRef dice_loss computes it (scale 1000, eps 1e-6):
 * 1 - (2 Σσ(x)y + s) / (Σσ(x) + Σy + s) with s = DICE_SMOOTH = 1000 * 1e-6.
 * (SPEC 2.9 writes s = 1; the public code's s is 1e-3, which matters for
 * small and empty masks.) */
#define DICE_SMOOTH 1e-3
float dice_forward(const float *x, const float *y, size_t n);
void  dice_backward(float *dx, const float *x, const float *y, float dloss, size_t n);

/* ------------------------------------------------------------------------ */
/* Vision                                                                   */
/* ------------------------------------------------------------------------ */
/* Bilinear resize, align_corners=False (PyTorch F.interpolate semantics, no
 * antialias), in[C,Hin,Win] -> out[C,Hout,Wout] for arbitrary sizes (C may
 * fold a batch). backward scatters into din. */
void resize_bilinear_forward(float *out, const float *in, int C, int Hin, int Win, int Hout, int Wout);
void resize_bilinear_backward(float *din, const float *dout, int C, int Hin, int Win, int Hout, int Wout);

/* ConvTranspose2d, kernel 2x2, stride 2: in[B,Cin,H,W], w[Cin,Cout,2,2]
 * (PyTorch layout), b[Cout] (may be NULL) -> out[B,Cout,2H,2W]. */
void conv_transpose2x2_forward(float *out, const float *in, const float *w, const float *b,
                               int B, int Cin, int Cout, int H, int W);
void conv_transpose2x2_backward(float *din, float *dw, float *db, const float *dout,
                                const float *in, const float *w, int B, int Cin, int Cout, int H, int W);

/* Conv2d: in[B,Cin,H,W], w[Cout,Cin,KH,KW], b[Cout] (may be NULL),
 * stride sh/sw, zero padding ph/pw -> out[B,Cout,OH,OW] with
 * OH = (H + 2ph - KH)/sh + 1, OW likewise. scratch: conv2d_scratch_floats(). */
size_t conv2d_scratch_floats(int Cin, int H, int W, int KH, int KW, int sh, int sw, int ph, int pw);
void conv2d_forward(float *out, float *scratch, const float *in, const float *w, const float *b,
                    int B, int Cin, int H, int W, int Cout, int KH, int KW,
                    int sh, int sw, int ph, int pw);
void conv2d_backward(float *din, float *dw, float *db, float *scratch, const float *dout,
                     const float *in, const float *w,
                     int B, int Cin, int H, int W, int Cout, int KH, int KW,
                     int sh, int sw, int ph, int pw);

/* RoIAlign (torchvision.ops.roi_align semantics), CHANNELS-LAST:
 *   in[B,H,W,C] (e.g. a 16x16 grid of projected CLIP tokens),
 *   boxes[K,5] = (batch_index, x1, y1, x2, y2) in input coordinates before
 *   spatial_scale, out[K,PH,PW,C] (one token per output cell).
 *   aligned: subtract 0.5 px after scaling; sampling_ratio > 0 fixed samples
 *   per bin side, <= 0 adaptive (ceil(roi/bin)). Gradient to `in` only. */
void roi_align_forward(float *out, const float *in, const float *boxes, int K,
                       int B, int H, int W, int C, int PH, int PW,
                       float spatial_scale, int sampling_ratio, int aligned);
void roi_align_backward(float *din, const float *dout, const float *boxes, int K,
                        int B, int H, int W, int C, int PH, int PW,
                        float spatial_scale, int sampling_ratio, int aligned);

/* ------------------------------------------------------------------------ */
/* ImageBind audio (model/imagebind_audio.c)                                */
/* ------------------------------------------------------------------------ */
/* Batched transpose of the last two dims: out[b, c, r] = in[b, r, c] for
 * in[B, R, C] -> out[B, C, R] (e.g. a conv's [D, P] grid -> [P, D] tokens).
 * backward: din[b, r, c] += dout[b, c, r]. */
void transpose_forward(float *out, const float *in, int B, int R, int C);
void transpose_backward(float *din, const float *dout, int B, int R, int C);

/* ------------------------------------------------------------------------ */
/* SAM image encoder (model/sam_image_encoder.c)                            */
/* ------------------------------------------------------------------------ */
/* Non-overlapping p x p patches as rows: in[B,Cin,H,W] (H, W multiples of p)
 * -> out[B*(H/p)*(W/p), Cin*p*p], row (b,gy,gx) = in[b, :, gy*p.., gx*p..]
 * flattened as (ci,ky,kx). A Conv2d(kernel p, stride p) is then linear_forward
 * with its weight [Cout,Cin,p,p] read as [Cout, Cin*p*p]; output rows are
 * channels-last tokens [B, H/p, W/p, Cout]. */
void sam_patchify_forward(float *out, const float *in, int B, int Cin, int H, int W, int p);
/* Window partition (segment-anything window_partition): in[B,H,W,C] ->
 * out[B*nh*nw, ws, ws, C], nh = ceil(H/ws), nw = ceil(W/ws), window (b,i,j)
 * = rows i*ws.., columns j*ws..; cells beyond H or W get pad[C] (NULL: zeros). */
void sam_window_partition_forward(float *out, const float *in, const float *pad,
                                  int B, int H, int W, int C, int ws);
/* Its inverse, dropping the padding: in[B*nh*nw, ws, ws, C] -> out[B,H,W,C]. */
void sam_window_unpartition_forward(float *out, const float *in, int B, int H, int W, int C, int ws);
/* get_rel_pos: out[qs,ks,D] = R[idx(i,j)], where R is rel_pos[L,D] linearly
 * resized (align_corners=False) to M = 2*max(qs,ks)-1 rows when L != M, and
 * idx(i,j) = trunc(i*max(ks/qs,1) - j*max(qs/ks,1) + (ks-1)*max(qs/ks,1))
 * evaluated in float32 as PyTorch does. */
void sam_rel_pos_forward(float *out, const float *rel_pos, int qs, int ks, int L, int D);
/* SAM attention with decomposed relative positions, over B independent
 * h x w grids (windows or whole images) of T = h*w tokens:
 *   qkv[B,T,3,heads,hd] (the qkv Linear's output as is), out[B,T,heads*hd];
 *   logit(t,s) = scale q_t·k_s + q_t·Rh[t_y,s_y] + q_t·Rw[t_x,s_x] (q unscaled),
 *   Rh[h,h,hd], Rw[w,w,hd] from sam_rel_pos_forward (both NULL: no relative
 *   positions); softmax over s; out = Σ_s p v_s. The T x T logits never
 *   exist whole: scratch is sam_attention_scratch_floats() floats, passed with
 *   its size (the kernel uses no more parallel slots than it holds). */
size_t sam_attention_scratch_floats(int B, int h, int w, int heads);
void sam_attention_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv,
                           const float *Rh, const float *Rw, float scale,
                           int B, int h, int w, int heads, int hd);
/* The same attention with bf16 products, what the frozen encoder with bf16
 * weights runs in GEMM mode bf16 (as PyTorch's bf16 SAM multiplies bf16
 * tensors): q, k, v rounded to bf16; logits = their product accumulated in
 * fp32, times scale, plus the relative terms in fp32 from the unrounded q;
 * softmax in fp32; the probabilities rounded to bf16 and multiplied by the
 * rounded v, fp32 accumulation. Forward only (16-bit weights mean a frozen
 * encoder). Same arguments and scratch as sam_attention_forward; the CPU
 * backend uses its own buffers (about 24 MiB of logits per chunk) and oneDNN,
 * the CUDA backend cuBLAS bf16 GEMMs with the two rounded copies in its
 * workspaces. */
void sam_attention_bf16_forward(float *out, float *scratch, size_t scratch_floats, const float *qkv,
                                const float *Rh, const float *Rw, float scale,
                                int B, int h, int w, int heads, int hd);
/* The bytes its own buffers (CPU, each grown to its largest use) or the
 * workspaces it grows (CUDA, with kc_workspace's quarter of headroom) hold
 * after calls with each of the n shapes (B grids of h x w), heads, hd and the
 * scratch_floats of those calls: what `anyref plan` counts for it. */
typedef struct { int B, h, w; } sam_attn_shape;
size_t sam_attention_bf16_workspace_bytes(const sam_attn_shape *s, int n, int heads, int hd, size_t scratch_floats);

/* Their backward (the optionally trainable encoder, sam_encoder_cfg.trainable);
 * all accumulate, any gradient output may be NULL.
 * window partition: din[B,H,W,C] += dout[B*nh*nw,ws,ws,C] at the real cells,
 *   dpad[C] += Σ dout over the padded cells. */
void sam_window_partition_backward(float *din, float *dpad, const float *dout,
                                   int B, int H, int W, int C, int ws);
/* unpartition: din[B*nh*nw,ws,ws,C] += dout[B,H,W,C] at the real cells (padding untouched). */
void sam_window_unpartition_backward(float *din, const float *dout, int B, int H, int W, int C, int ws);
/* get_rel_pos: drel_pos[L,D] += adjoint of the gather and linear resize of dout[qs,ks,D]. */
void sam_rel_pos_backward(float *drel_pos, const float *dout, int qs, int ks, int L, int D);
/* Attention: dqkv[B,T,3,heads,hd] += d(q,k,v) from dout[B,T,heads*hd] (dqkv not NULL);
 * dRh[h,h,hd], dRw[w,w,hd] += the tables' gradients (Rh, Rw NULL: no relative
 * positions). Probabilities are recomputed from qkv, Rh, Rw; scratch is
 * sam_attention_backward_scratch_floats() floats, passed with its size. */
size_t sam_attention_backward_scratch_floats(int B, int h, int w, int heads, int hd);
void sam_attention_backward(float *dqkv, float *dRh, float *dRw, float *scratch, size_t scratch_floats,
                            const float *dout, const float *qkv, const float *Rh, const float *Rw, float scale,
                            int B, int h, int w, int heads, int hd);

/* ------------------------------------------------------------------------ */
/* Refocusing (SPEC 2.5)                                                    */
/* ------------------------------------------------------------------------ */
/* For one [SEG] of one sample:
 *   hid[T,D]   final hidden states of the sample,
 *   att[Hq,T,S] that sample's last-layer attention probabilities (S >= T),
 *   p the position that predicts [SEG], s the first answer position - 1 ... the
 *   span is i in [s, p). P[i] = mean_h att[h,p,i], a_i = P[i] / Σ_{j in span} P[j],
 *   out[D] = hid[p] + lambda * Σ a_i hid[i]. An empty span (s >= p) or a span
 *   with zero total attention gives out = hid[p].
 * backward: dhid[p] += dout; dhid[i] += lambda a_i dout;
 *   datt[h,p,i] += (1/Hq) dP_i with dP_i = (lambda dout·hid[i] - Σ_j a_j lambda dout·hid[j]) / Σ P. */
void refocus_forward(float *out, const float *hid, const float *att, int p, int s,
                     float lambda, int T, int S, int Hq, int D);
void refocus_backward(float *dhid, float *datt, const float *dout, const float *hid,
                      const float *att, int p, int s, float lambda, int T, int S, int Hq, int D);
/* The same from the predicting row's probabilities alone: prow[Hq,S] =
 * att[:, p, :] (e.g. one row of attention_rows_forward); dprow[Hq,S] += its
 * gradient, as datt[:, p, :] above. */
void refocus_row_forward(float *out, const float *hid, const float *prow, int p, int s,
                         float lambda, int T, int S, int Hq, int D);
void refocus_row_backward(float *dhid, float *dprow, const float *dout, const float *hid,
                          const float *prow, int p, int s, float lambda, int T, int S, int Hq, int D);

/* ------------------------------------------------------------------------ */
/* Optimiser primitives                                                     */
/* ------------------------------------------------------------------------ */
/* Σ x[i]^2 in double (for gradient-norm clipping). */
double sumsq(const float *x, size_t n);
/* scale x[i] *= s */
void scale_inplace(float *x, float s, size_t n);
/* AdamW (decoupled weight decay, PyTorch torch.optim.AdamW semantics), one
 * tensor: t is the 1-based step; grad is read, never modified. */
void adamw_update(float *param, const float *grad, float *m, float *v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, int t);

#ifdef __cplusplus
}
#endif
#endif /* ANYREF_KERNELS_H */
