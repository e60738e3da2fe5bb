// adapterkit native shim: autograd. Grad mode is thread-local in libtorch; all calls come from the
// JavaScript main thread, so a set/restore pair from TypeScript is enough for noGrad().
#include "common.h"

using namespace ak;

AK_OP(requiresGrad) { return Napi::Boolean::New(info.Env(), T(info, 0).requires_grad()); }
AK_OP(setRequiresGrad) {
  T(info, 0).requires_grad_(B(info, 1));
  return info.Env().Undefined();
}
AK_OP(isLeaf) { return Napi::Boolean::New(info.Env(), T(info, 0).is_leaf()); }
AK_OP(detach) { AK_RET(T(info, 0).detach()); }

// backward(t, gradient?, retainGraph)
AK_OP(backward) {
  auto& t = T(info, 0);
  if (!t.requires_grad()) fail("backward() on a tensor that does not require grad (no parameter with requiresGrad led to it, or it was computed under noGrad)");
  auto g = OptT(info, 1);
  if (!g && t.numel() != 1) fail("backward() without a gradient needs a scalar output, got " + std::to_string(t.numel()) + " elements");
  bool retain = B(info, 2);
  t.backward(g.value_or(at::Tensor()), retain, /*create_graph=*/false);
  return info.Env().Undefined();
}

AK_OP(grad) {
  const at::Tensor& g = T(info, 0).grad();
  if (!g.defined()) return info.Env().Null();
  AK_RET(g);
}
// setGrad(t, g | null): null drops the gradient (what zeroGrad with setToNone does)
AK_OP(setGrad) {
  auto& t = T(info, 0);
  if (!Has(info, 1)) t.mutable_grad() = at::Tensor();
  else t.mutable_grad() = T(info, 1);
  return info.Env().Undefined();
}
AK_OP(isGradEnabled) { return Napi::Boolean::New(info.Env(), at::GradMode::is_enabled()); }
AK_OP(setGradEnabled) {
  at::GradMode::set_enabled(B(info, 0));
  return info.Env().Undefined();
}

void registerAutograd(Napi::Object e) {
  AK_REG(e, requiresGrad); AK_REG(e, setRequiresGrad); AK_REG(e, isLeaf); AK_REG(e, detach);
  AK_REG(e, backward); AK_REG(e, grad); AK_REG(e, setGrad); AK_REG(e, isGradEnabled); AK_REG(e, setGradEnabled);
}
