// adapterkit native shim: reductions, scans, sorting. A reduction takes (t, dims | undefined,
// keepdim); no dims means over all elements.
#include "common.h"

using namespace ak;

AK_OP(sum) {
  auto& a = T(info, 0);
  if (!Has(info, 1)) AK_RET(a.sum());
  auto dims = IntList(info, 1);
  AK_RET(a.sum(at::IntArrayRef(dims), B(info, 2)));
}
AK_OP(mean) {
  auto& a = T(info, 0);
  if (!Has(info, 1)) AK_RET(a.mean());
  auto dims = IntList(info, 1);
  AK_RET(a.mean(at::IntArrayRef(dims), B(info, 2)));
}
AK_OP(prod) { AK_RET(T(info, 0).prod()); }
AK_OP(logsumexp) {
  auto dims = IntList(info, 1);
  AK_RET(at::logsumexp(T(info, 0), at::IntArrayRef(dims), B(info, 2)));
}
// var(t, dims | undefined, unbiased, keepdim)
AK_OP(var) {
  auto& a = T(info, 0);
  if (!Has(info, 1)) AK_RET(at::var(a, B(info, 2)));
  auto dims = IntList(info, 1);
  AK_RET(at::var(a, at::IntArrayRef(dims), B(info, 2), B(info, 3)));
}
// norm(t, p, dims | undefined, keepdim): the vector p-norm
AK_OP(norm) {
  auto& a = T(info, 0);
  at::Scalar p(D(info, 1));
  if (!Has(info, 2)) AK_RET(at::linalg_vector_norm(a, p, c10::nullopt, false, c10::nullopt));
  auto dims = IntList(info, 2);
  AK_RET(at::linalg_vector_norm(a, p, at::IntArrayRef(dims), B(info, 3), c10::nullopt));
}
// max/min(t, dim | undefined, keepdim): without dim, one value; with dim, [values, indices]
#define MAXMIN(name)                                                               \
  AK_OP(name) {                                                                    \
    auto& a = T(info, 0);                                                          \
    if (!Has(info, 1)) AK_RET(at::name(a));                                        \
    auto r = at::name(a, I64(info, 1), B(info, 2));                                \
    return wrapList(info.Env(), {std::get<0>(r), std::get<1>(r)});                 \
  }
MAXMIN(max)
MAXMIN(min)
AK_OP(argmax) {
  auto& a = T(info, 0);
  if (!Has(info, 1)) AK_RET(a.argmax());
  AK_RET(a.argmax(I64(info, 1), B(info, 2)));
}
AK_OP(argmin) {
  auto& a = T(info, 0);
  if (!Has(info, 1)) AK_RET(a.argmin());
  AK_RET(a.argmin(I64(info, 1), B(info, 2)));
}
AK_OP(any) { AK_RET(T(info, 0).any()); }
AK_OP(all) { AK_RET(T(info, 0).all()); }
AK_OP(cumsum) { AK_RET(T(info, 0).cumsum(I64(info, 1))); }
// topk(t, k, dim, largest, sorted) -> [values, indices]
AK_OP(topk) {
  auto r = T(info, 0).topk(I64(info, 1), I64(info, 2), B(info, 3), B(info, 4));
  return wrapList(info.Env(), {std::get<0>(r), std::get<1>(r)});
}
// sort(t, dim, descending) -> [values, indices]; stable so equal keys keep their order
AK_OP(sort) {
  auto r = T(info, 0).sort(/*stable=*/true, I64(info, 1), B(info, 2));
  return wrapList(info.Env(), {std::get<0>(r), std::get<1>(r)});
}

void registerReduce(Napi::Object e) {
  AK_REG(e, sum); AK_REG(e, mean); AK_REG(e, prod); AK_REG(e, logsumexp); AK_REG(e, var); AK_REG(e, norm);
  AK_REG(e, max); AK_REG(e, min); AK_REG(e, argmax); AK_REG(e, argmin); AK_REG(e, any); AK_REG(e, all);
  AK_REG(e, cumsum); AK_REG(e, topk); AK_REG(e, sort);
}
