// adapterkit native shim: elementwise math (with broadcasting and scalars), comparisons,
// activations, and the in-place variants optimizers need. No logic beyond calling ATen.
#include "common.h"

using namespace ak;

static bool isScalarArg(const Napi::CallbackInfo& info, size_t i) { return info[i].IsNumber() || info[i].IsBoolean(); }

#define UNARY(name, expr) AK_OP(name) { auto& a = T(info, 0); AK_RET(expr); }
#define BINARY(name, call) \
  AK_OP(name) { \
    auto& a = T(info, 0); \
    if (isScalarArg(info, 1)) { auto b = Sc(info, 1, a); AK_RET(call); } \
    auto& b = T(info, 1); AK_RET(call); \
  }

UNARY(exp, a.exp())
UNARY(log, a.log())
UNARY(log1p, a.log1p())
UNARY(sqrt, a.sqrt())
UNARY(rsqrt, a.rsqrt())
UNARY(abs, a.abs())
UNARY(neg, a.neg())
UNARY(sign, a.sign())
UNARY(sin, a.sin())
UNARY(cos, a.cos())
UNARY(reciprocal, a.reciprocal())
UNARY(square, a.square())
UNARY(floor, a.floor())
UNARY(erf, a.erf())
UNARY(tanh, a.tanh())
UNARY(sigmoid, a.sigmoid())
UNARY(relu, a.relu())
UNARY(silu, at::silu(a))
UNARY(logicalNot, a.logical_not())
UNARY(isnan, a.isnan())
UNARY(isfinite, a.isfinite())

AK_OP(gelu) { AK_RET(at::gelu(T(info, 0), Has(info, 1) ? S(info, 1) : std::string("none"))); }
AK_OP(softmax) { AK_RET(at::softmax(T(info, 0), I64(info, 1))); }
AK_OP(logSoftmax) { AK_RET(at::log_softmax(T(info, 0), I64(info, 1))); }

AK_OP(add) {  // add(a, b | scalar, alpha?)
  auto& a = T(info, 0);
  at::Scalar alpha = Has(info, 2) ? Sc(info, 2, a) : at::Scalar(1);
  if (isScalarArg(info, 1)) AK_RET(at::add(a, Sc(info, 1, a), alpha));
  AK_RET(at::add(a, T(info, 1), alpha));
}
BINARY(sub, at::sub(a, b))
BINARY(mul, at::mul(a, b))
BINARY(div, at::div(a, b))
BINARY(pow, at::pow(a, b))
BINARY(eq, at::eq(a, b))
BINARY(ne, at::ne(a, b))
BINARY(lt, at::lt(a, b))
BINARY(le, at::le(a, b))
BINARY(gt, at::gt(a, b))
BINARY(ge, at::ge(a, b))
AK_OP(maximum) {
  auto& a = T(info, 0);
  if (isScalarArg(info, 1)) AK_RET(at::clamp_min(a, Sc(info, 1, a)));
  AK_RET(at::maximum(a, T(info, 1)));
}
AK_OP(minimum) {
  auto& a = T(info, 0);
  if (isScalarArg(info, 1)) AK_RET(at::clamp_max(a, Sc(info, 1, a)));
  AK_RET(at::minimum(a, T(info, 1)));
}
AK_OP(logicalAnd) { AK_RET(at::logical_and(T(info, 0), T(info, 1))); }
AK_OP(logicalOr) { AK_RET(at::logical_or(T(info, 0), T(info, 1))); }

static c10::optional<at::Scalar> optScalar(const Napi::CallbackInfo& info, size_t i, const at::Tensor& like) {
  if (!Has(info, i)) return c10::nullopt;
  return Sc(info, i, like);
}
AK_OP(clamp) {
  auto& a = T(info, 0);
  auto lo = optScalar(info, 1, a), hi = optScalar(info, 2, a);
  if (!lo && !hi) fail("clamp needs a min, a max, or both");
  AK_RET(at::clamp(a, lo, hi));
}

// where(cond, a | scalar, b | scalar): a scalar takes the dtype of the tensor on the other side.
AK_OP(where) {
  auto& c = T(info, 0);
  bool sa = isScalarArg(info, 1), sb = isScalarArg(info, 2);
  if (sa && sb) fail("where needs at least one tensor among its two value arguments");
  at::Tensor a = sa ? at::Tensor() : T(info, 1);
  at::Tensor b = sb ? at::Tensor() : T(info, 2);
  if (sa) a = at::scalar_tensor(Sc(info, 1, b), b.options());
  if (sb) b = at::scalar_tensor(Sc(info, 2, a), a.options());
  AK_RET(at::where(c, a, b));
}
AK_OP(maskedFill) {
  auto& a = T(info, 0);
  auto& m = T(info, 1);
  if (isScalarArg(info, 2)) AK_RET(a.masked_fill(m, Sc(info, 2, a)));
  AK_RET(a.masked_fill(m, T(info, 2)));
}

// ---- in-place (return nothing; the TypeScript side returns the same tensor) ----
#define INPLACE(name, ...) \
  AK_OP(name) { auto& a = T(info, 0); __VA_ARGS__; return info.Env().Undefined(); }

INPLACE(add_, {
  at::Scalar alpha = Has(info, 2) ? Sc(info, 2, a) : at::Scalar(1);
  if (isScalarArg(info, 1)) a.add_(Sc(info, 1, a), alpha); else a.add_(T(info, 1), alpha);
})
INPLACE(sub_, { if (isScalarArg(info, 1)) a.sub_(Sc(info, 1, a)); else a.sub_(T(info, 1)); })
INPLACE(mul_, { if (isScalarArg(info, 1)) a.mul_(Sc(info, 1, a)); else a.mul_(T(info, 1)); })
INPLACE(div_, { if (isScalarArg(info, 1)) a.div_(Sc(info, 1, a)); else a.div_(T(info, 1)); })
INPLACE(addcmul_, { a.addcmul_(T(info, 1), T(info, 2), Has(info, 3) ? Sc(info, 3, a) : at::Scalar(1)); })
INPLACE(addcdiv_, { a.addcdiv_(T(info, 1), T(info, 2), Has(info, 3) ? Sc(info, 3, a) : at::Scalar(1)); })
INPLACE(lerp_, { if (isScalarArg(info, 2)) a.lerp_(T(info, 1), Sc(info, 2, a)); else a.lerp_(T(info, 1), T(info, 2)); })
INPLACE(copy_, { a.copy_(T(info, 1)); })
INPLACE(zero_, { a.zero_(); })
INPLACE(fill_, { a.fill_(Sc(info, 1, a)); })
INPLACE(sqrt_, { a.sqrt_(); })
INPLACE(clamp_, {
  auto lo = optScalar(info, 1, a), hi = optScalar(info, 2, a);
  if (!lo && !hi) fail("clamp_ needs a min, a max, or both");
  a.clamp_(lo, hi);
})
INPLACE(maskedFill_, { a.masked_fill_(T(info, 1), Sc(info, 2, a)); })

void registerMath(Napi::Object e) {
  AK_REG(e, exp); AK_REG(e, log); AK_REG(e, log1p); AK_REG(e, sqrt); AK_REG(e, rsqrt); AK_REG(e, abs);
  AK_REG(e, neg); AK_REG(e, sign); AK_REG(e, sin); AK_REG(e, cos); AK_REG(e, reciprocal); AK_REG(e, square);
  AK_REG(e, floor); AK_REG(e, erf); AK_REG(e, tanh); AK_REG(e, sigmoid); AK_REG(e, relu); AK_REG(e, silu);
  AK_REG(e, logicalNot); AK_REG(e, isnan); AK_REG(e, isfinite);
  AK_REG(e, gelu); AK_REG(e, softmax); AK_REG(e, logSoftmax);
  AK_REG(e, add); AK_REG(e, sub); AK_REG(e, mul); AK_REG(e, div); AK_REG(e, pow);
  AK_REG(e, eq); AK_REG(e, ne); AK_REG(e, lt); AK_REG(e, le); AK_REG(e, gt); AK_REG(e, ge);
  AK_REG(e, maximum); AK_REG(e, minimum); AK_REG(e, logicalAnd); AK_REG(e, logicalOr);
  AK_REG(e, clamp); AK_REG(e, where); AK_REG(e, maskedFill);
  AK_REG(e, add_); AK_REG(e, sub_); AK_REG(e, mul_); AK_REG(e, div_); AK_REG(e, addcmul_); AK_REG(e, addcdiv_);
  AK_REG(e, lerp_); AK_REG(e, copy_); AK_REG(e, zero_); AK_REG(e, fill_); AK_REG(e, sqrt_); AK_REG(e, clamp_);
  AK_REG(e, maskedFill_);
}
