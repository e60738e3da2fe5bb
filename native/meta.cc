// adapterkit native shim: tensor metadata, data in and out, casts, threads, seeds, devices, and the
// C++-side timing loop used by bench/engine.ts as the "no binding" reference.
#include "common.h"
#include <ATen/Parallel.h>
#include <torch/version.h>
#include <chrono>
#include <malloc.h>
#include <cstring>
#include <dlfcn.h>
#include <ATen/Version.h>

using namespace ak;

AK_OP(dispose) {
  Holder* h = holderOf(info[0], 0);
  if (h->t.defined()) {
    h->t = at::Tensor();
    g_live--;
  }
  return info.Env().Undefined();
}

// [dtypeCode, device, ...shape] in one call; the TypeScript side caches it.
AK_OP(meta) {
  auto& t = T(info, 0);
  auto out = Napi::Array::New(info.Env(), 2 + t.dim());
  out.Set(0u, Napi::Number::New(info.Env(), static_cast<int>(t.scalar_type())));
  out.Set(1u, Napi::String::New(info.Env(), t.device().str()));
  for (int64_t d = 0; d < t.dim(); d++) out.Set(static_cast<uint32_t>(2 + d), Napi::Number::New(info.Env(), static_cast<double>(t.size(d))));
  return out;
}

AK_OP(isContiguous) { return Napi::Boolean::New(info.Env(), T(info, 0).is_contiguous()); }
AK_OP(strides) {
  auto& t = T(info, 0);
  auto out = Napi::Array::New(info.Env(), t.dim());
  for (int64_t d = 0; d < t.dim(); d++) out.Set(static_cast<uint32_t>(d), Napi::Number::New(info.Env(), static_cast<double>(t.stride(d))));
  return out;
}

AK_OP(item) {
  auto& t = T(info, 0);
  if (t.numel() != 1) fail("item() needs a tensor with exactly one element, got " + std::to_string(t.numel()));
  at::Scalar s = t.item();
  if (s.isBoolean()) return Napi::Boolean::New(info.Env(), s.toBool());
  if (s.isIntegral(false)) return Napi::Number::New(info.Env(), static_cast<double>(s.toLong()));
  return Napi::Number::New(info.Env(), s.toDouble());
}

// Raw bytes of the tensor (row-major, its own dtype) copied into a new ArrayBuffer.
AK_OP(toBuffer) {
  at::Tensor c = T(info, 0).detach().to(at::kCPU).contiguous();
  size_t n = c.numel() * c.element_size();
  auto buf = Napi::ArrayBuffer::New(info.Env(), n);
  if (n) std::memcpy(buf.Data(), c.data_ptr(), n);
  return buf;
}

// fromBuffer(typedArrayOrBuffer, dtypeCode, shape, device?)
AK_OP(fromBuffer) {
  if (!info[0].IsTypedArray() && !info[0].IsArrayBuffer()) fail("data must be a TypedArray, Buffer or ArrayBuffer");
  const uint8_t* src;
  size_t len;
  if (info[0].IsArrayBuffer()) {
    auto ab = info[0].As<Napi::ArrayBuffer>();
    src = static_cast<const uint8_t*>(ab.Data());
    len = ab.ByteLength();
  } else {
    auto ta = info[0].As<Napi::TypedArray>();
    src = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    len = ta.ByteLength();
  }
  at::ScalarType dt = Dtype(info, 1);
  auto shape = IntList(info, 2);
  int64_t numel = 1;
  for (auto s : shape) {
    if (s < 0) fail("negative dimension in shape");
    numel *= s;
  }
  size_t want = static_cast<size_t>(numel) * c10::elementSize(dt);
  if (want != len) fail("data has " + std::to_string(len) + " bytes but shape and dtype need " + std::to_string(want));
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dt));
  if (len) std::memcpy(t.data_ptr(), src, len);
  if (dt == at::kBool) t = t.view(at::kByte).ne(0);  // any non-zero byte is true
  at::Device dev = Dev(info, 3);
  if (!dev.is_cpu()) t = t.to(dev);
  AK_RET(t);
}

AK_OP(to) {  // to(t, dtypeCode | undefined, device | undefined, copy)
  auto& t = T(info, 0);
  at::TensorOptions o = t.options();
  if (Has(info, 1)) o = o.dtype(Dtype(info, 1));
  if (Has(info, 2)) o = o.device(Dev(info, 2));
  AK_RET(t.to(o, /*non_blocking=*/false, /*copy=*/B(info, 3)));
}

AK_OP(clone) { AK_RET(T(info, 0).clone()); }
AK_OP(contiguous) { AK_RET(T(info, 0).contiguous()); }

AK_OP(setNumThreads) {
  int64_t n = I64(info, 0);
  if (n < 1) fail("number of threads must be at least 1");
  at::set_num_threads(static_cast<int>(n));
  return info.Env().Undefined();
}
AK_OP(getNumThreads) { return Napi::Number::New(info.Env(), at::get_num_threads()); }

AK_OP(manualSeed) {
  uint64_t seed = static_cast<uint64_t>(I64(info, 0));
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
  // Every CUDA device's default generator too (dropout and unseeded sampling on the GPU), as
  // torch.manual_seed does.
  if (at::hasCUDA()) {
    auto& hooks = at::detail::getCUDAHooks();
    for (int d = 0; d < hooks.getNumGPUs(); d++) {
      auto g = hooks.getDefaultCUDAGenerator(static_cast<at::DeviceIndex>(d));
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_current_seed(seed);
    }
  }
  return info.Env().Undefined();
}

AK_OP(cudaAvailable) { return Napi::Boolean::New(info.Env(), at::hasCUDA()); }
AK_OP(cudaDeviceCount) {
  return Napi::Number::New(info.Env(), at::hasCUDA() ? static_cast<double>(at::detail::getCUDAHooks().getNumGPUs()) : 0.0);
}
// bfloat16 on a CUDA device: compute capability 8.0+ (libtorch's own test for cuDNN v8 bf16, the only
// one reachable without CUDA headers).
AK_OP(cudaBf16Supported) {
  return Napi::Boolean::New(info.Env(), at::hasCUDA() && at::detail::getCUDAHooks().supportsBFloat16ConvolutionWithCuDNNv8());
}
AK_OP(liveTensors) { return Napi::Number::New(info.Env(), static_cast<double>(g_live.load())); }
AK_OP(torchVersion) { return Napi::String::New(info.Env(), std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." + std::to_string(TORCH_VERSION_PATCH)); }
AK_OP(noop) { return info.Env().Undefined(); }

// Large tensor buffers are above glibc's mmap threshold, so by default every temporary is a fresh
// mmap that is unmapped when freed, and the next one page-faults all its memory in again (measured:
// GPT-2-small attention spent ~85% of its time in page faults). Raising the mmap threshold to its
// maximum (32 MiB on 64-bit) and the trim threshold keeps freed buffers in the heap for reuse.
// Resident memory then stays near its high-water mark instead of returning to the OS.
AK_OP(tuneAllocator) {
  bool on = B(info, 0);
  int ok = 1;
  if (on) {
    ok &= mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    ok &= mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
    ok &= mallopt(M_TOP_PAD, 64 * 1024 * 1024);
  } else {
    ok &= mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    ok &= mallopt(M_TRIM_THRESHOLD, 128 * 1024);
    ok &= mallopt(M_TOP_PAD, 0);
  }
  return Napi::Boolean::New(info.Env(), ok == 1);
}

// What the engine runs on: libtorch's build configuration (BLAS, oneDNN, the ATen CPU capability in
// use), its thread pools, and, when the BLAS is OpenBLAS, the kernel set OpenBLAS chose for this CPU.
// OpenBLAS is found among the libraries already loaded (RTLD_NOLOAD): nothing new is loaded.
AK_OP(engineInfo) {
  auto env = info.Env();
  auto out = Napi::Object::New(env);
  out.Set("buildConfig", at::show_config());
  out.Set("parallelInfo", at::get_parallel_info());
  out.Set("mkldnn", at::hasMKLDNN());
  const char* names[] = {"libopenblas.so.0", "libblas.so.3", "libopenblasp-r0.3.21.so"};
  for (const char* name : names) {
    void* h = dlopen(name, RTLD_NOLOAD | RTLD_LAZY);
    if (!h) continue;
    auto corename = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_corename"));
    auto config = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_config"));
    auto threads = reinterpret_cast<int (*)()>(dlsym(h, "openblas_get_num_threads"));
    if (corename && config) {
      out.Set("openblasCore", std::string(corename()));
      out.Set("openblasConfig", std::string(config()));
      if (threads) out.Set("openblasThreads", threads());
      dlclose(h);
      break;
    }
    dlclose(h);
  }
  return out;
}

// Flush-to-zero for float32 denormals (values below 1.2e-38), as torch.set_flush_denormal(True):
// the CPU handles denormal operands in microcode, ~13x slower per multiply (measured), and AdamW's
// second moments of tiny gradients are full of them. MXCSR is per thread, so it is set on this
// thread and on each intra-op worker (one chunk per thread); threads created later inherit it.
AK_OP(setFlushDenormal) {
  bool on = B(info, 0);
  bool ok = at::globalContext().setFlushDenormal(on);
  at::parallel_for(0, at::get_num_threads(), 1, [on](int64_t, int64_t) { at::globalContext().setFlushDenormal(on); });
  return Napi::Boolean::New(info.Env(), ok);
}

// Seconds per matmul, timed inside C++ (no N-API in the loop): the reference for the binding's cost.
AK_OP(benchMatmul) {
  auto& a = T(info, 0);
  auto& b = T(info, 1);
  int64_t iters = I64(info, 2);
  at::NoGradGuard ng;
  at::Tensor r = at::matmul(a, b);  // warm-up
  auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; i++) r = at::matmul(a, b);
  auto t1 = std::chrono::steady_clock::now();
  return Napi::Number::New(info.Env(), std::chrono::duration<double>(t1 - t0).count() / static_cast<double>(iters));
}

void registerMeta(Napi::Object exports) {
  AK_REG(exports, dispose);
  AK_REG(exports, meta);
  AK_REG(exports, isContiguous);
  AK_REG(exports, strides);
  AK_REG(exports, item);
  AK_REG(exports, toBuffer);
  AK_REG(exports, fromBuffer);
  AK_REG(exports, to);
  AK_REG(exports, clone);
  AK_REG(exports, contiguous);
  AK_REG(exports, setNumThreads);
  AK_REG(exports, getNumThreads);
  AK_REG(exports, manualSeed);
  AK_REG(exports, cudaAvailable);
  AK_REG(exports, cudaDeviceCount);
  AK_REG(exports, liveTensors);
  AK_REG(exports, cudaBf16Supported);
  AK_REG(exports, torchVersion);
  AK_REG(exports, noop);
  AK_REG(exports, tuneAllocator);
  AK_REG(exports, benchMatmul);
  AK_REG(exports, engineInfo);
  AK_REG(exports, setFlushDenormal);
}
