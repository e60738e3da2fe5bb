// adapterkit native shim: tensor creation. Random tensors are drawn on the CPU (from the global
// generator, or from a fresh one when a per-call seed is given) and then moved, so a seed gives the
// same numbers on every device.
#include "common.h"

using namespace ak;

static at::TensorOptions opts(const Napi::CallbackInfo& info, size_t dtypeArg) {
  return at::TensorOptions().dtype(Dtype(info, dtypeArg));
}
static at::Tensor place(at::Tensor t, const Napi::CallbackInfo& info, size_t devArg) {
  at::Device d = Dev(info, devArg);
  return d.is_cpu() ? t : t.to(d);
}

// zeros(shape, dtype, device) and friends
AK_OP(zeros) { AK_RET(place(at::zeros(IntList(info, 0), opts(info, 1)), info, 2)); }
AK_OP(ones) { AK_RET(place(at::ones(IntList(info, 0), opts(info, 1)), info, 2)); }
AK_OP(empty) { AK_RET(place(at::empty(IntList(info, 0), opts(info, 1)), info, 2)); }
AK_OP(full) {  // full(shape, value, dtype, device)
  at::TensorOptions o = opts(info, 2);
  at::Tensor like = at::empty({0}, o);
  AK_RET(place(at::full(IntList(info, 0), Sc(info, 1, like), o), info, 3));
}
AK_OP(arange) {  // arange(start, end, step, dtype, device)
  at::TensorOptions o = opts(info, 3);
  at::Tensor like = at::empty({0}, o);
  AK_RET(place(at::arange(Sc(info, 0, like), Sc(info, 1, like), Sc(info, 2, like), o), info, 4));
}
AK_OP(eye) { AK_RET(place(at::eye(I64(info, 0), I64(info, 1), opts(info, 2)), info, 3)); }

// rand(shape, dtype, device, seed?)
AK_OP(rand) {
  auto shape = IntList(info, 0);
  AK_RET(place(at::rand(shape, Gen(info, 3), opts(info, 1)), info, 2));
}
AK_OP(randn) {
  auto shape = IntList(info, 0);
  AK_RET(place(at::randn(shape, Gen(info, 3), opts(info, 1)), info, 2));
}
AK_OP(randint) {  // randint(low, high, shape, dtype, device, seed?)
  auto shape = IntList(info, 2);
  AK_RET(place(at::randint(I64(info, 0), I64(info, 1), shape, Gen(info, 5), opts(info, 3)), info, 4));
}
// multinomial(probs, n, replacement, seed?)
AK_OP(multinomial) {
  auto& p = T(info, 0);
  AK_RET(at::multinomial(p, I64(info, 1), B(info, 2), Gen(info, 3, p.device())));
}

// In-place initialisers used by adapter init (kaiming-uniform, gaussian): uniform_(t, a, b, seed?)
AK_OP(uniform_) {
  auto& t = T(info, 0);
  at::NoGradGuard ng;
  t.uniform_(D(info, 1), D(info, 2), Gen(info, 3, t.device()));
  return info.Env().Undefined();
}
AK_OP(normal_) {
  auto& t = T(info, 0);
  at::NoGradGuard ng;
  t.normal_(D(info, 1), D(info, 2), Gen(info, 3, t.device()));
  return info.Env().Undefined();
}

void registerCreation(Napi::Object exports) {
  AK_REG(exports, zeros);
  AK_REG(exports, ones);
  AK_REG(exports, empty);
  AK_REG(exports, full);
  AK_REG(exports, arange);
  AK_REG(exports, eye);
  AK_REG(exports, rand);
  AK_REG(exports, randn);
  AK_REG(exports, randint);
  AK_REG(exports, multinomial);
  AK_REG(exports, uniform_);
  AK_REG(exports, normal_);
}
