// adapterkit native shim: fused LM head + cross-entropy. The logits (N, V) of a large vocabulary
// are never held whole: rows are processed in chunks (logits, log-sum-exp and loss in one pass),
// and the backward recomputes each chunk's logits to form (softmax - onehot) directly. This is a
// custom autograd function, so it composes with everything else in the graph.
#include <cstring>
#include "common.h"
#include <torch/csrc/autograd/custom_function.h>
#include <ATen/Parallel.h>

using namespace ak;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// float32 accumulation for float32/bf16/f16 inputs, float64 for float64 (gradient checks).
static at::ScalarType accType(const at::Tensor& h) { return h.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

struct LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
  // h (N, C), w (V, C), target (N) int64 -> sum over rows with target != ignore of -log softmax(h w^T)[target]
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& w, const at::Tensor& target, int64_t ignore, int64_t chunk) {
    at::NoGradGuard ng;
    const int64_t n = h.size(0);
    const auto acc = accType(h);
    at::Tensor loss = at::zeros({}, h.options().dtype(acc));
    // w.t() stays a view: the matrix-product library takes a transposed (V, C) operand directly,
    // which is the fast path for bfloat16 (a contiguous (C, V) copy measured slower here).
    at::Tensor wt = w.t();
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      at::Tensor t = target.narrow(0, s, len);
      at::Tensor logits = at::matmul(h.narrow(0, s, len), wt).to(acc);  // (len, V)
      at::Tensor lse = logits.logsumexp(1);  // (len)
      at::Tensor valid = t.ne(ignore);
      at::Tensor picked = logits.gather(1, t.clamp_min(0).unsqueeze(1)).squeeze(1);
      loss.add_(lse.sub(picked).mul(valid).sum());
    }
    ctx->save_for_backward({h, w, target});
    ctx->saved_data["ignore"] = ignore;
    ctx->saved_data["chunk"] = chunk;
    return loss;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    at::Tensor h = saved[0], w = saved[1], target = saved[2];
    const int64_t ignore = ctx->saved_data["ignore"].toInt();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const auto acc = accType(h);
    at::Tensor g = grads[0].to(acc);  // scalar
    const bool needH = ctx->needs_input_grad(0), needW = ctx->needs_input_grad(1);
    at::NoGradGuard ng;
    const int64_t n = h.size(0);
    at::Tensor dh = needH ? at::empty_like(h) : at::Tensor();
    at::Tensor dw = needW ? at::zeros(w.sizes(), w.options().dtype(acc)) : at::Tensor();
    at::Tensor wt = w.t();  // (C, V) view
    for (int64_t s = 0; s < n; s += chunk) {
      const int64_t len = std::min(chunk, n - s);
      at::Tensor hc = h.narrow(0, s, len);
      at::Tensor t = target.narrow(0, s, len);
      at::Tensor logits = at::matmul(hc, wt).to(acc);  // (len, V)
      at::Tensor p = logits.softmax(1);
      at::Tensor valid = t.ne(ignore);
      p.scatter_add_(1, t.clamp_min(0).unsqueeze(1), at::full({len, 1}, -1.0, p.options()));  // softmax - onehot
      p.mul_(valid.unsqueeze(1).to(acc).mul(g));
      at::Tensor pc = p.to(h.scalar_type());
      if (needH) dh.narrow(0, s, len).copy_(at::matmul(pc, w));  // (len, C)
      if (needW) dw.add_(at::matmul(pc.t(), hc).to(acc));  // (V, C)
    }
    return {dh, needW ? dw.to(w.scalar_type()) : at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// linearCrossEntropy(h (N, C), w (V, C), target (N), ignoreIndex, chunkRows) -> scalar float32 sum
AK_OP(linearCrossEntropy) {
  auto& h = T(info, 0);
  auto& w = T(info, 1);
  auto& t = T(info, 2);
  if (h.dim() != 2 || w.dim() != 2 || h.size(1) != w.size(1)) fail("linearCrossEntropy needs h (N, C) and weight (V, C) with the same C");
  if (t.dim() != 1 || t.size(0) != h.size(0) || t.scalar_type() != at::kLong) fail("linearCrossEntropy needs int64 targets (N) matching h's rows");
  if (h.scalar_type() != w.scalar_type()) fail("linearCrossEntropy needs h and weight in one dtype");
  const int64_t ignore = I64(info, 3);
  const int64_t chunk = std::max<int64_t>(1, I64(info, 4));
  at::Tensor valid = t.ne(ignore);
  if (valid.any().item<bool>()) {
    at::Tensor tv = t.masked_select(valid);
    if (tv.min().item<int64_t>() < 0 || tv.max().item<int64_t>() >= w.size(0)) fail("linearCrossEntropy: a target is outside [0, V)");
  }
  AK_RET(LinearCrossEntropy::apply(h, w, t, ignore, chunk));
}


// One row of loraGatherAdd: y (O) = Bt^T (A x) + bias, with A (R, I) and Bt (R, O) of the row's
// adapter. Both inner loops run over contiguous memory, so they vectorize. Inlined into the cloned
// row functions below, which GCC builds for AVX-512 and AVX2 (picked at load time by the CPU) and a
// baseline for other x86-64 CPUs.
static inline __attribute__((always_inline)) void loraRowCore(const float* x, const float* A, const float* Bt, const float* bias, float* y, float* xa, int64_t R, int64_t I, int64_t O) {
  for (int64_t r = 0; r < R; r++) {
    const float* a = A + r * I;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < I; i++) s += a[i] * x[i];
    xa[r] = s;
  }
  if (bias) {
    for (int64_t o = 0; o < O; o++) y[o] = bias[o];
  } else {
    for (int64_t o = 0; o < O; o++) y[o] = 0;
  }
  for (int64_t r = 0; r < R; r++) {
    const float* b = Bt + r * O;
    const float v = xa[r];
#pragma omp simd
    for (int64_t o = 0; o < O; o++) y[o] += b[o] * v;
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define AK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define AK_CLONES
#endif

// float32 rows: out = res + y.
AK_CLONES static void loraRowF32(const float* x, const float* A, const float* Bt, const float* bias, const float* res, float* out, float* y, float* xa, int64_t R, int64_t I, int64_t O) {
  loraRowCore(x, A, Bt, bias, y, xa, R, I, O);
#pragma omp simd
  for (int64_t o = 0; o < O; o++) out[o] = res[o] + y[o];
}

// bfloat16 rows, converted with bit operations that vectorize (c10::BFloat16's scalar conversions
// cost more than the product itself at decode sizes). Rounding as c10's: to nearest even, NaN kept.
static inline float bf16ToF32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline uint16_t f32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t rounded = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  return f != f ? static_cast<uint16_t>(0x7FC0) : rounded;
}
AK_CLONES static void loraRowBf16(const uint16_t* xs, const float* A, const float* Bt, const float* bias, const uint16_t* res, uint16_t* out, float* xf, float* y, float* xa, int64_t R, int64_t I, int64_t O) {
#pragma omp simd
  for (int64_t i = 0; i < I; i++) xf[i] = bf16ToF32(xs[i]);
  loraRowCore(xf, A, Bt, bias, y, xa, R, I, O);
#pragma omp simd
  for (int64_t o = 0; o < O; o++) out[o] = f32ToBf16(bf16ToF32(res[o]) + y[o]);
}

// loraGatherAdd(result (M, O), x (M, I), A (K, R, I) f32, Bt (K, R, O) f32 (pre-scaled, transposed),
// rows (M) int64, bias (K, O) f32 or null) -> result + (Bt[k]^T A[k] x[m] + bias[k]), k = rows[m].
// The per-row gathered LoRA product of a mixed-adapter batch (S-LoRA/Punica's BGMV) for the small
// row counts of decode steps: one pass over the rows, no gathered copies of A and B and no batched
// GEMM of tiny matrices (whose per-item overhead dominated). Inference only (no autograd).
// out row = result row + y (float accumulation), in the result's dtype.
AK_OP(loraGatherAdd) {
  at::Tensor result = T(info, 0);
  at::Tensor x = T(info, 1);
  at::Tensor A = T(info, 2).contiguous();
  at::Tensor Bt = T(info, 3).contiguous();
  at::Tensor rows = T(info, 4).contiguous();
  c10::optional<at::Tensor> bias = OptT(info, 5);
  if (A.scalar_type() != at::kFloat || Bt.scalar_type() != at::kFloat || A.dim() != 3 || Bt.dim() != 3) fail("loraGatherAdd needs float32 A (K, R, I) and Bt (K, R, O)");
  const int64_t K = A.size(0), R = A.size(1), I = A.size(2), O = Bt.size(2);
  if (Bt.size(0) != K || Bt.size(1) != R) fail("loraGatherAdd: Bt must be (K, R, O) matching A (K, R, I)");
  if (x.dim() != 2 || x.size(1) != I) fail("loraGatherAdd: x must be (M, I) with I = " + std::to_string(I));
  const int64_t M = x.size(0);
  if (result.dim() != 2 || result.size(0) != M || result.size(1) != O) fail("loraGatherAdd: result must be (M, O)");
  if (rows.scalar_type() != at::kLong || rows.dim() != 1 || rows.size(0) != M) fail("loraGatherAdd: rows must be int64 (M)");
  if (!x.device().is_cpu() || !A.device().is_cpu() || !Bt.device().is_cpu() || !result.device().is_cpu()) fail("loraGatherAdd runs on the CPU");
  if (!at::isFloatingType(x.scalar_type()) || !at::isFloatingType(result.scalar_type())) fail("loraGatherAdd: x and result must be floating point");
  at::Tensor bb;
  if (bias) {
    bb = bias->contiguous();
    if (bb.scalar_type() != at::kFloat || bb.dim() != 2 || bb.size(0) != K || bb.size(1) != O) fail("loraGatherAdd: bias must be float32 (K, O)");
  }
  const int64_t* rp = rows.data_ptr<int64_t>();
  for (int64_t m = 0; m < M; m++) if (rp[m] < 0 || rp[m] >= K) fail("loraGatherAdd: a row's adapter index is outside [0, K)");
  // float32 or bfloat16 in and out (both the same) are read and written directly; anything else goes
  // through float32.
  const at::ScalarType dt = x.scalar_type();
  const bool direct = (dt == at::kFloat || dt == at::kBFloat16) && result.scalar_type() == dt;
  at::Tensor xc = direct ? x.contiguous() : x.to(at::kFloat).contiguous();
  at::Tensor rc = direct ? result.contiguous() : result.to(at::kFloat).contiguous();
  at::Tensor out = at::empty_like(rc);
  const float* ap = A.data_ptr<float>();
  const float* bp = Bt.data_ptr<float>();
  const float* biasp = bb.defined() ? bb.data_ptr<float>() : nullptr;
  const bool bf = xc.scalar_type() == at::kBFloat16;
  const uint16_t* xh = bf ? reinterpret_cast<const uint16_t*>(xc.data_ptr<c10::BFloat16>()) : nullptr;
  const uint16_t* rh = bf ? reinterpret_cast<const uint16_t*>(rc.data_ptr<c10::BFloat16>()) : nullptr;
  uint16_t* oh = bf ? reinterpret_cast<uint16_t*>(out.data_ptr<c10::BFloat16>()) : nullptr;
  const float* xp = bf ? nullptr : xc.data_ptr<float>();
  const float* rp32 = bf ? nullptr : rc.data_ptr<float>();
  float* op = bf ? nullptr : out.data_ptr<float>();
  // A decode step's rows are a few microseconds of work: threads only for prefill-sized batches
  // (waking the pool costs more than it saves below ~1M multiply-adds).
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 20) / std::max<int64_t>(1, R * (I + O)));
  at::parallel_for(0, M, grain, [&](int64_t m0, int64_t m1) {
    std::vector<float> xa(R), xf(I), y(O);
    for (int64_t m = m0; m < m1; m++) {
      const int64_t k = rp[m];
      const float* bias_k = biasp ? biasp + k * O : nullptr;
      if (bf) loraRowBf16(xh + m * I, ap + k * R * I, bp + k * R * O, bias_k, rh + m * O, oh + m * O, xf.data(), y.data(), xa.data(), R, I, O);
      else loraRowF32(xp + m * I, ap + k * R * I, bp + k * R * O, bias_k, rp32 + m * O, op + m * O, y.data(), xa.data(), R, I, O);
    }
  });
  AK_RET(direct ? out : out.to(result.scalar_type()));
}

void registerFused(Napi::Object e) {
  AK_REG(e, linearCrossEntropy);
  AK_REG(e, loraGatherAdd);
}
