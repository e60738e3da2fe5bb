// adapterkit native shim: shared helpers. Every exported entry is wrapped by `guarded`, so a
// libtorch exception (c10::Error) or any std::exception becomes a JavaScript Error, never an abort.
// Tensors travel to JavaScript as type-tagged N-API externals that own one at::Tensor reference.
#pragma once
#include <napi.h>
#include <ATen/ATen.h>
#include <atomic>
#include <string>
#include <vector>

namespace ak {

// One JS handle = one reference to a tensor. dispose() drops the reference (freeing the storage when
// it was the last one); the holder itself is deleted by the external's finalizer (the safety net).
struct Holder {
  at::Tensor t;
};

extern std::atomic<int64_t> g_live;  // handles whose tensor is still held

Napi::Value wrap(Napi::Env env, at::Tensor t);
Napi::Value wrapList(Napi::Env env, const std::vector<at::Tensor>& ts);
Holder* holderOf(const Napi::Value& v, size_t argIndex);
at::Tensor& T(const Napi::CallbackInfo& info, size_t i);
c10::optional<at::Tensor> OptT(const Napi::CallbackInfo& info, size_t i);
std::vector<at::Tensor> TList(const Napi::CallbackInfo& info, size_t i);

int64_t I64(const Napi::CallbackInfo& info, size_t i);
double D(const Napi::CallbackInfo& info, size_t i);
bool B(const Napi::CallbackInfo& info, size_t i);
std::string S(const Napi::CallbackInfo& info, size_t i);
std::vector<int64_t> IntList(const Napi::CallbackInfo& info, size_t i);
bool Has(const Napi::CallbackInfo& info, size_t i);  // present and not undefined/null
at::ScalarType Dtype(const Napi::CallbackInfo& info, size_t i);
at::Device Dev(const Napi::CallbackInfo& info, size_t i);
// A JS number as a Scalar that keeps integer tensors integral (2 on an int64 tensor stays int64).
at::Scalar Sc(const Napi::CallbackInfo& info, size_t i, const at::Tensor& like);
// A generator seeded from info[i] (or nullopt for the global one), on the device the draw runs on.
c10::optional<at::Generator> Gen(const Napi::CallbackInfo& info, size_t i, const at::Device& device = at::kCPU);

[[noreturn]] void fail(const std::string& msg);

using Fn = Napi::Value (*)(const Napi::CallbackInfo&);

template <Fn F>
Napi::Value guarded(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::Error& e) {
    throw Napi::Error::New(info.Env(), e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  } catch (...) {
    throw Napi::Error::New(info.Env(), "unknown native error");
  }
}

}  // namespace ak

#define AK_OP(name) static Napi::Value name(const Napi::CallbackInfo& info)
#define AK_REG(exports, name) \
  (exports).Set(#name, Napi::Function::New((exports).Env(), ak::guarded<name>, #name))
#define AK_RET(expr) return ak::wrap(info.Env(), (expr))
