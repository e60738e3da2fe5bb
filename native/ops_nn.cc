// adapterkit native shim: linear algebra and neural-network ops.
#include "common.h"

using namespace ak;

AK_OP(matmul) { AK_RET(at::matmul(T(info, 0), T(info, 1))); }
AK_OP(bmm) { AK_RET(at::bmm(T(info, 0), T(info, 1))); }
AK_OP(outer) { AK_RET(at::outer(T(info, 0), T(info, 1))); }
// addmm(self, m1, m2, beta, alpha) = beta*self + alpha*(m1 @ m2)
AK_OP(addmm) {
  auto& s = T(info, 0);
  AK_RET(at::addmm(s, T(info, 1), T(info, 2), Sc(info, 3, s), Sc(info, 4, s)));
}
// linear(x, weight [out, in], bias?) = x @ weight^T + bias
AK_OP(linear) { AK_RET(at::linear(T(info, 0), T(info, 1), OptT(info, 2))); }

// svd(A) -> [U, S, Vh], the reduced decomposition (full_matrices = false)
AK_OP(svd) {
  auto r = at::linalg_svd(T(info, 0), /*full_matrices=*/false);
  return wrapList(info.Env(), {std::get<0>(r), std::get<1>(r), std::get<2>(r)});
}
// qr(A) -> [Q, R], reduced
AK_OP(qr) {
  auto r = at::linalg_qr(T(info, 0), "reduced");
  return wrapList(info.Env(), {std::get<0>(r), std::get<1>(r)});
}

AK_OP(inv) { AK_RET(at::linalg_inv(T(info, 0))); }

// layerNorm(x, normalizedShape, weight?, bias?, eps)
AK_OP(layerNorm) {
  AK_RET(at::layer_norm(T(info, 0), IntList(info, 1), OptT(info, 2), OptT(info, 3), D(info, 4), /*cudnn=*/true));
}
// dropout(x, p, train)
AK_OP(dropout) {
  double p = D(info, 1);
  if (p < 0 || p > 1) fail("dropout probability must be in [0, 1], got " + std::to_string(p));
  AK_RET(at::dropout(T(info, 0), p, B(info, 2)));
}
AK_OP(triu) { AK_RET(T(info, 0).triu(I64(info, 1))); }
AK_OP(tril) { AK_RET(T(info, 0).tril(I64(info, 1))); }

// embedding(weight [V, C], ids (any shape), paddingIdx) -> ids.shape + [C]
AK_OP(embedding) {
  auto& w = T(info, 0);
  auto& ids = T(info, 1);
  if (at::isFloatingType(ids.scalar_type())) fail("embedding ids must be an integer tensor, got " + std::string(c10::toString(ids.scalar_type())));
  if (ids.numel() > 0) {
    int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= w.size(0)) fail("embedding id out of range: ids span [" + std::to_string(lo) + ", " + std::to_string(hi) + "] but the table has " + std::to_string(w.size(0)) + " rows");
  }
  AK_RET(at::embedding(w, ids, Has(info, 2) ? I64(info, 2) : -1));
}

// crossEntropy(logits [N, C] or [N, C, ...], target, reduction "mean"|"sum"|"none", ignoreIndex,
// labelSmoothing, weight?) with PyTorch's semantics (mean over non-ignored targets).
AK_OP(crossEntropy) {
  std::string red = S(info, 2);
  int64_t r = red == "mean" ? at::Reduction::Mean : red == "sum" ? at::Reduction::Sum : red == "none" ? at::Reduction::None : -1;
  if (r < 0) fail("reduction must be mean, sum or none, got " + red);
  double ls = D(info, 4);
  if (ls < 0 || ls > 1) fail("label smoothing must be in [0, 1], got " + std::to_string(ls));
  AK_RET(at::cross_entropy_loss(T(info, 0), T(info, 1), OptT(info, 5), r, I64(info, 3), ls));
}

void registerNN(Napi::Object e) {
  AK_REG(e, matmul); AK_REG(e, bmm); AK_REG(e, outer); AK_REG(e, addmm); AK_REG(e, linear);
  AK_REG(e, svd); AK_REG(e, qr); AK_REG(e, inv); AK_REG(e, layerNorm); AK_REG(e, dropout); AK_REG(e, triu); AK_REG(e, tril);
  AK_REG(e, embedding); AK_REG(e, crossEntropy);
}
