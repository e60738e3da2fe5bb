// adapterkit native shim: fused LM head + cross-entropy. The logits (N, V) of a large vocabulary
// are never held whole: rows are processed in chunks (logits, log-sum-exp and loss in one pass),
// and the backward recomputes each chunk's logits to form (softmax - onehot) directly. This is a
// custom autograd function, so it composes with everything else in the graph.
#include "common.h"
#include <torch/csrc/autograd/custom_function.h>

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

void registerFused(Napi::Object e) {
  AK_REG(e, linearCrossEntropy);
}
