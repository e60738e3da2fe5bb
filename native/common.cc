// adapterkit native shim: handle wrapping and argument parsing.
#include "common.h"
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <cmath>
#include <stdexcept>

namespace ak {

std::atomic<int64_t> g_live{0};

// A random 128-bit tag so that an external made by anything else is never taken for a tensor.
static const napi_type_tag kTensorTag = {0x6164617074657273ULL, 0x6b69742d74656e73ULL};

void fail(const std::string& msg) { throw std::runtime_error(msg); }

static void finalize(Napi::Env, Holder* h) {
  if (h->t.defined()) g_live--;
  delete h;
}

Napi::Value wrap(Napi::Env env, at::Tensor t) {
  auto* h = new Holder{std::move(t)};
  if (h->t.defined()) g_live++;
  auto ext = Napi::External<Holder>::New(env, h, finalize);
  ext.TypeTag(&kTensorTag);
  return ext;
}

Napi::Value wrapList(Napi::Env env, const std::vector<at::Tensor>& ts) {
  auto arr = Napi::Array::New(env, ts.size());
  for (uint32_t i = 0; i < ts.size(); i++) arr.Set(i, wrap(env, ts[i]));
  return arr;
}

Holder* holderOf(const Napi::Value& v, size_t argIndex) {
  if (!v.IsExternal()) fail("argument " + std::to_string(argIndex) + " is not a tensor");
  auto ext = v.As<Napi::External<Holder>>();
  if (!ext.CheckTypeTag(&kTensorTag)) fail("argument " + std::to_string(argIndex) + " is not a tensor");
  return ext.Data();
}

at::Tensor& T(const Napi::CallbackInfo& info, size_t i) {
  Holder* h = holderOf(info[i], i);
  if (!h->t.defined()) fail("tensor was disposed");
  return h->t;
}

bool Has(const Napi::CallbackInfo& info, size_t i) {
  return info.Length() > i && !info[i].IsUndefined() && !info[i].IsNull();
}

c10::optional<at::Tensor> OptT(const Napi::CallbackInfo& info, size_t i) {
  if (!Has(info, i)) return c10::nullopt;
  return T(info, i);
}

std::vector<at::Tensor> TList(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsArray()) fail("argument " + std::to_string(i) + " must be an array of tensors");
  auto arr = info[i].As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Holder* h = holderOf(arr.Get(k), i);
    if (!h->t.defined()) fail("tensor " + std::to_string(k) + " of the list was disposed");
    out.push_back(h->t);
  }
  return out;
}

int64_t I64(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) fail("argument " + std::to_string(i) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d)) fail("argument " + std::to_string(i) + " must be an integer, got " + std::to_string(d));
  return static_cast<int64_t>(d);
}

double D(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) fail("argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool B(const Napi::CallbackInfo& info, size_t i) { return info[i].ToBoolean().Value(); }

std::string S(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsString()) fail("argument " + std::to_string(i) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

std::vector<int64_t> IntList(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsArray()) fail("argument " + std::to_string(i) + " must be an array of integers");
  auto arr = info[i].As<Napi::Array>();
  std::vector<int64_t> out(arr.Length());
  for (uint32_t k = 0; k < arr.Length(); k++) {
    Napi::Value v = arr.Get(k);
    if (!v.IsNumber()) fail("argument " + std::to_string(i) + " must be an array of integers");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d)) fail("argument " + std::to_string(i) + " must be an array of integers");
    out[k] = static_cast<int64_t>(d);
  }
  return out;
}

at::ScalarType Dtype(const Napi::CallbackInfo& info, size_t i) {
  int64_t c = I64(info, i);
  switch (c) {
    case 0: return at::kByte;
    case 1: return at::kChar;
    case 3: return at::kInt;
    case 4: return at::kLong;
    case 5: return at::kHalf;
    case 6: return at::kFloat;
    case 7: return at::kDouble;
    case 11: return at::kBool;
    case 15: return at::kBFloat16;
    default: fail("unsupported dtype code " + std::to_string(c));
  }
}

at::Device Dev(const Napi::CallbackInfo& info, size_t i) {
  if (!Has(info, i)) return at::Device(at::kCPU);
  return at::Device(S(info, i));  // "cpu", "cuda", "cuda:1"; c10 throws a clear error otherwise
}

at::Scalar Sc(const Napi::CallbackInfo& info, size_t i, const at::Tensor& like) {
  if (info[i].IsBoolean()) return at::Scalar(info[i].As<Napi::Boolean>().Value());
  double d = D(info, i);
  bool integral = at::isIntegralType(like.scalar_type(), /*includeBool=*/true);
  if (integral && std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.007199254740992e15) {
    return at::Scalar(static_cast<int64_t>(d));
  }
  return at::Scalar(d);
}

c10::optional<at::Generator> Gen(const Napi::CallbackInfo& info, size_t i, const at::Device& device) {
  if (!Has(info, i)) return c10::nullopt;
  uint64_t seed = static_cast<uint64_t>(I64(info, i));
  if (device.is_cuda()) {
    // A fresh CUDA generator without CUDA headers: clone the device's default one, then seed it
    // (a CPU generator cannot drive a kernel on a CUDA tensor).
    at::Generator g = at::detail::getCUDAHooks().getDefaultCUDAGenerator(device.has_index() ? device.index() : -1).clone();
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_current_seed(seed);
    return g;
  }
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

}  // namespace ak
