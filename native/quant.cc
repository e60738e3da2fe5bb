// adapterkit native shim: quantized base weights (QLoRA's NF4/FP4 with double-quantized scales,
// LLM.int8-style per-row int8, group-wise asymmetric int4) and the fused matrix product over them.
//
// Layouts (a weight W (O, I), flattened row-major, element e = r*I + c):
//   nf4/fp4: two 4-bit codes per byte, the even element in the HIGH nibble (bitsandbytes' packing);
//            block b = e / blocksize has scale absmax[b]; value = code[nibble] * absmax[b].
//            With double quantization absmax is uint8 indices into a 256-entry map (nestedCode):
//            absmax[b] = nestedCode[q[b]] * nestedAbsmax[b / nestedBlocksize] + offset.
//   int4:    same packing; block b (= group, blocks never straddle rows since I % group == 0)
//            has scale s[b] and zero point z[b] in 0..15; value = (q - z[b]) * s[b].
//   int8:    int8 (O, I) and a per-row absmax scb (O); value = q * scb[r] / 127.
// The matrix product never holds the whole dequantized weight: the forward dequantizes a tile of
// rows at a time (one GEMM per tile with K = I), the backward a slab of columns (K = O), so the
// extra memory is one tile, whatever the layer's size. Gradients flow to the input only.
#include "common.h"
#include <torch/csrc/autograd/custom_function.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <type_traits>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define AK_X86 1
#endif

using namespace ak;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

namespace {

enum class Fmt { NF4, FP4, INT4, INT8 };

Fmt parseFmt(const std::string& s) {
  if (s == "nf4") return Fmt::NF4;
  if (s == "fp4") return Fmt::FP4;
  if (s == "int4") return Fmt::INT4;
  if (s == "int8") return Fmt::INT8;
  fail("unknown quantization format \"" + s + "\"; expected nf4, fp4, int4 or int8");
}

// Everything the kernels need to read one quantized weight.
struct QSpec {
  Fmt fmt;
  int64_t out = 0, in = 0, blocksize = 64, nestedBlocksize = 256;
  double offset = 0;
  at::Tensor data;          // uint8 packed (4-bit) or int8 (O, I)
  at::Tensor absmax;        // float32 per block (4-bit), per row (int8 scb), per group (int4 scales); or uint8 (nested)
  at::Tensor nestedAbsmax;  // float32, double quantization only
  at::Tensor nestedCode;    // float32 (256), double quantization only
  at::Tensor code;          // float32 (16), nf4/fp4
  at::Tensor zeros;         // uint8 per group, int4
  bool nested() const { return nestedAbsmax.defined(); }
  int64_t numel() const { return out * in; }
  int64_t nblocks() const { return fmt == Fmt::INT8 ? out : (numel() + blocksize - 1) / blocksize; }
};

at::Tensor optTensor(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return at::Tensor();
  Holder* h = holderOf(v, 0);
  if (!h->t.defined()) fail(std::string("quantized weight: tensor \"") + key + "\" was disposed");
  return h->t;
}
int64_t intField(const Napi::Object& o, const char* key, int64_t dflt) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsNumber()) fail(std::string("quantized weight: \"") + key + "\" must be a number");
  return static_cast<int64_t>(v.As<Napi::Number>().DoubleValue());
}

void need(bool ok, const std::string& msg) {
  if (!ok) fail("quantized weight: " + msg);
}
std::string shp(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); i++) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "] " + std::string(c10::toString(t.scalar_type()));
}

// Checks every size and dtype against the shape, so a hostile file can never index out of bounds.
void validate(const QSpec& q) {
  need(q.out > 0 && q.in > 0, "shape must be positive, got [" + std::to_string(q.out) + ", " + std::to_string(q.in) + "]");
  need(q.data.defined() && q.absmax.defined(), "needs data and scales");
  need(q.data.device() == q.absmax.device(), "data and scales must be on one device");
  need(q.data.is_contiguous() && q.absmax.is_contiguous(), "tensors must be contiguous");
  if (q.fmt == Fmt::INT8) {
    need(q.data.scalar_type() == at::kChar && q.data.numel() == q.numel(), "int8 data must be int8 with " + std::to_string(q.numel()) + " elements, got " + shp(q.data));
    need(q.absmax.scalar_type() == at::kFloat && q.absmax.numel() == q.out, "int8 row scales must be float32 (" + std::to_string(q.out) + "), got " + shp(q.absmax));
    return;
  }
  need(q.blocksize >= 2 && q.blocksize % 2 == 0 && q.blocksize <= (1 << 20), "blocksize must be even and in [2, 2^20], got " + std::to_string(q.blocksize));
  need(q.data.scalar_type() == at::kByte && q.data.numel() == (q.numel() + 1) / 2, "packed data must be uint8 with " + std::to_string((q.numel() + 1) / 2) + " elements, got " + shp(q.data));
  const int64_t nb = q.nblocks();
  if (q.nested()) {
    need(q.absmax.scalar_type() == at::kByte && q.absmax.numel() == nb, "double-quantized scales must be uint8 (" + std::to_string(nb) + "), got " + shp(q.absmax));
    need(q.nestedBlocksize > 0, "nested blocksize must be positive");
    const int64_t nnb = (nb + q.nestedBlocksize - 1) / q.nestedBlocksize;
    need(q.nestedAbsmax.scalar_type() == at::kFloat && q.nestedAbsmax.numel() == nnb && q.nestedAbsmax.is_contiguous(), "nested absmax must be float32 (" + std::to_string(nnb) + "), got " + shp(q.nestedAbsmax));
    need(q.nestedCode.defined() && q.nestedCode.scalar_type() == at::kFloat && q.nestedCode.numel() == 256 && q.nestedCode.is_contiguous(), "nested quant map must be float32 (256)");
    need(std::isfinite(q.offset), "nested offset must be finite");
  } else {
    need(q.absmax.scalar_type() == at::kFloat && q.absmax.numel() == nb, "scales must be float32 (" + std::to_string(nb) + "), got " + shp(q.absmax));
  }
  if (q.fmt == Fmt::INT4) {
    need(q.in % q.blocksize == 0, "int4 groups must divide the input size (" + std::to_string(q.in) + " % " + std::to_string(q.blocksize) + ")");
    need(q.zeros.defined() && q.zeros.scalar_type() == at::kByte && q.zeros.numel() == nb && q.zeros.is_contiguous(), "int4 zero points must be uint8 (" + std::to_string(nb) + ")");
  } else {
    need(q.code.defined() && q.code.scalar_type() == at::kFloat && q.code.numel() == 16 && q.code.is_contiguous(), "the 4-bit code must be float32 (16)");
  }
}

QSpec parseSpec(const Napi::Value& v) {
  if (!v.IsObject()) fail("quantized weight: expected an object");
  auto o = v.As<Napi::Object>();
  QSpec q;
  Napi::Value f = o.Get("format");
  if (!f.IsString()) fail("quantized weight: format must be a string");
  q.fmt = parseFmt(f.As<Napi::String>().Utf8Value());
  q.out = intField(o, "out", 0);
  q.in = intField(o, "in", 0);
  q.blocksize = intField(o, "blocksize", 64);
  q.nestedBlocksize = intField(o, "nestedBlocksize", 256);
  Napi::Value off = o.Get("offset");
  q.offset = off.IsNumber() ? off.As<Napi::Number>().DoubleValue() : 0.0;
  q.data = optTensor(o, "data");
  q.absmax = optTensor(o, "absmax");
  q.nestedAbsmax = optTensor(o, "nestedAbsmax");
  q.nestedCode = optTensor(o, "nestedCode");
  q.code = optTensor(o, "code");
  q.zeros = optTensor(o, "zeros");
  validate(q);
  return q;
}

// The float scale of block b.
inline float blockScale(const QSpec& q, const float* am, const uint8_t* amq, const float* nam, const float* ncode, int64_t b) {
  if (!amq) return am[b];
  return ncode[amq[b]] * nam[b / q.nestedBlocksize] + static_cast<float>(q.offset);
}

#ifdef AK_X86
// AVX-512 decoding of packed 4-bit codes: 16 bytes (32 values) per step, the 16-entry table held in
// one register (vpermps), even elements from the high nibbles, odd from the low ones, interleaved.
// Outputs float32, or bfloat16 rounded to nearest even (as c10::BFloat16 rounds).
__attribute__((target("avx512f"))) static void decode4Avx512(const uint8_t* p, int64_t nbytes, const float* lut16, float* outF, c10::BFloat16* outB) {
  const __m512 lut = _mm512_loadu_ps(lut16);
  const __m512i first = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i second = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  const __m512i low4 = _mm512_set1_epi32(15), one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
  for (int64_t k = 0; k < nbytes; k += 16) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k)));
    const __m512 fh = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
    const __m512 fl = _mm512_permutexvar_ps(_mm512_and_si512(v, low4), lut);
    const __m512 o[2] = {_mm512_permutex2var_ps(fh, first, fl), _mm512_permutex2var_ps(fh, second, fl)};
    for (int h = 0; h < 2; h++) {
      if (outF) {
        _mm512_storeu_ps(outF + 2 * k + 16 * h, o[h]);
      } else {
        __m512i b = _mm512_castps_si512(o[h]);
        b = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(b, 16), one), half));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(outB + 2 * k + 16 * h), _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16)));
      }
    }
  }
}
static const bool kAvx512 = __builtin_cpu_supports("avx512f");
#endif

// Decodes `pairs` bytes into 2*pairs values of T; the vector path where the CPU and T allow it.
template <typename T>
inline void decodePairs(const uint8_t* p, int64_t pairs, const T* lut, const float* lutf, T* o) {
  int64_t done = 0;
#ifdef AK_X86
  if constexpr (std::is_same<T, float>::value || std::is_same<T, c10::BFloat16>::value) {
    if (kAvx512 && pairs >= 16) {
      done = pairs / 16 * 16;
      if constexpr (std::is_same<T, float>::value) decode4Avx512(p, done, lutf, o, nullptr);
      else decode4Avx512(p, done, lutf, nullptr, o);
    }
  }
#endif
  for (int64_t k = done; k < pairs; k++) {
    const uint8_t v = p[k];
    o[2 * k] = lut[v >> 4];
    o[2 * k + 1] = lut[v & 15];
  }
}

// Dequantizes rows [r0, r1) x columns [c0, c1) into dst (contiguous (r1-r0, c1-c0)) on the CPU.
template <typename T>
void dequantCpu(const QSpec& q, int64_t r0, int64_t r1, int64_t c0, int64_t c1, T* dst) {
  const int64_t w = c1 - c0;
  if (q.fmt == Fmt::INT8) {
    const int8_t* d = q.data.data_ptr<int8_t>();
    const float* scb = q.absmax.data_ptr<float>();
    at::parallel_for(r0, r1, 16, [&](int64_t a, int64_t b) {
      for (int64_t r = a; r < b; r++) {
        const float s = scb[r] * (1.0f / 127.0f);
        const int8_t* src = d + r * q.in + c0;
        T* o = dst + (r - r0) * w;
        for (int64_t c = 0; c < w; c++) o[c] = static_cast<T>(static_cast<float>(src[c]) * s);
      }
    });
    return;
  }
  const uint8_t* d = q.data.data_ptr<uint8_t>();
  const bool nested = q.nested();
  const float* am = nested ? nullptr : q.absmax.data_ptr<float>();
  const uint8_t* amq = nested ? q.absmax.data_ptr<uint8_t>() : nullptr;
  const float* nam = nested ? q.nestedAbsmax.data_ptr<float>() : nullptr;
  const float* ncode = nested ? q.nestedCode.data_ptr<float>() : nullptr;
  const float* code = q.fmt == Fmt::INT4 ? nullptr : q.code.data_ptr<float>();
  const uint8_t* zeros = q.fmt == Fmt::INT4 ? q.zeros.data_ptr<uint8_t>() : nullptr;
  const int64_t bs = q.blocksize;
  at::parallel_for(r0, r1, std::max<int64_t>(1, 16384 / std::max<int64_t>(w, 1)), [&](int64_t ra, int64_t rb) {
    T lut[16];
    float lutf[16];
    for (int64_t r = ra; r < rb; r++) {
      T* o = dst + (r - r0) * w;
      int64_t e = r * q.in + c0;
      const int64_t end = r * q.in + c1;
      while (e < end) {
        const int64_t b = e / bs;
        const int64_t stop = std::min(end, (b + 1) * bs);
        const float s = blockScale(q, am, amq, nam, ncode, b);
        if (zeros) {
          const float z = static_cast<float>(zeros[b]);
          for (int k = 0; k < 16; k++) lutf[k] = (static_cast<float>(k) - z) * s;
        } else {
          for (int k = 0; k < 16; k++) lutf[k] = code[k] * s;
        }
        for (int k = 0; k < 16; k++) lut[k] = static_cast<T>(lutf[k]);
        // An odd first element sits in the low nibble; then whole bytes; then a trailing high nibble.
        if (e & 1) {
          *o++ = lut[d[e >> 1] & 15];
          e++;
        }
        const int64_t pairs = (stop - e) >> 1;
        decodePairs<T>(d + (e >> 1), pairs, lut, lutf, o);
        o += 2 * pairs;
        e += 2 * pairs;
        if (e < stop) {
          *o++ = lut[d[e >> 1] >> 4];
          e++;
        }
      }
    }
  });
}

// The same dequantization with ATen ops only: the path for non-CPU devices, and an independent
// reference for the loops above (tests compare the two).
at::Tensor dequantAten(const QSpec& q, int64_t r0, int64_t r1, int64_t c0, int64_t c1, at::ScalarType dt) {
  auto lopt = at::TensorOptions().dtype(at::kLong).device(q.data.device());
  at::Tensor e = (at::arange(r0, r1, lopt).mul(q.in).unsqueeze(1) + at::arange(c0, c1, lopt).unsqueeze(0)).reshape(-1);
  at::Tensor vals;
  if (q.fmt == Fmt::INT8) {
    vals = q.data.reshape(-1).index_select(0, e).to(at::kFloat) * q.absmax.index_select(0, e.div(q.in, "floor")).mul(1.0f / 127.0f);
  } else {
    at::Tensor bytes = q.data.reshape(-1).index_select(0, e.div(2, "floor")).to(at::kLong);
    at::Tensor nib = at::where(e.remainder(2).eq(0), bytes.bitwise_right_shift(4), bytes.bitwise_and(15));
    at::Tensor b = e.div(q.blocksize, "floor");
    at::Tensor scale = q.nested()
        ? q.nestedCode.index_select(0, q.absmax.index_select(0, b).to(at::kLong)) * q.nestedAbsmax.index_select(0, b.div(q.nestedBlocksize, "floor")) + q.offset
        : q.absmax.index_select(0, b);
    if (q.fmt == Fmt::INT4) vals = (nib.to(at::kFloat) - q.zeros.index_select(0, b).to(at::kFloat)) * scale;
    else vals = q.code.index_select(0, nib) * scale;
  }
  return vals.reshape({r1 - r0, c1 - c0}).to(dt);
}

at::Tensor dequantTile(const QSpec& q, int64_t r0, int64_t r1, int64_t c0, int64_t c1, at::ScalarType dt, bool reference = false) {
  if (reference || !q.data.device().is_cpu()) return dequantAten(q, r0, r1, c0, c1, dt);
  at::Tensor out = at::empty({r1 - r0, c1 - c0}, at::TensorOptions().dtype(dt));
  switch (dt) {
    case at::kFloat: dequantCpu<float>(q, r0, r1, c0, c1, out.data_ptr<float>()); break;
    case at::kBFloat16: dequantCpu<c10::BFloat16>(q, r0, r1, c0, c1, out.data_ptr<c10::BFloat16>()); break;
    case at::kHalf: dequantCpu<c10::Half>(q, r0, r1, c0, c1, out.data_ptr<c10::Half>()); break;
    case at::kDouble: dequantCpu<double>(q, r0, r1, c0, c1, out.data_ptr<double>()); break;
    default: fail("dequantize: output dtype must be a float type");
  }
  return out;
}

constexpr int64_t kTileElems = 1 << 22;  // 8 MiB of bf16 per tile: small layers take one tile (no copy of the output)

// Tile widths: forward tiles of rows (whole rows), backward slabs of columns aligned to blocks so
// that a slab starts on a byte boundary.
int64_t rowTile(const QSpec& q) { return std::max<int64_t>(64, kTileElems / q.in); }
int64_t colTile(const QSpec& q) {
  int64_t c = std::max<int64_t>(64, kTileElems / q.out);
  const int64_t align = q.fmt == Fmt::INT8 ? 64 : q.blocksize;
  return std::max(align, c / align * align);
}

// x2 (N, I) -> (N, O)
at::Tensor qmatmul(const at::Tensor& x2, const QSpec& q) {
  const int64_t tile = rowTile(q);
  if (tile >= q.out) return at::mm(x2, dequantTile(q, 0, q.out, 0, q.in, x2.scalar_type()).t());
  at::Tensor y = at::empty({x2.size(0), q.out}, x2.options());
  for (int64_t r = 0; r < q.out; r += tile) {
    const int64_t r1 = std::min(q.out, r + tile);
    at::Tensor wt = dequantTile(q, r, r1, 0, q.in, x2.scalar_type());  // (len, I)
    y.narrow(1, r, r1 - r).copy_(at::mm(x2, wt.t()));
  }
  return y;
}

// g2 (N, O) -> (N, I) = g2 @ W
at::Tensor qmatmulT(const at::Tensor& g2, const QSpec& q) {
  const int64_t tile = colTile(q);
  if (tile >= q.in) return at::mm(g2, dequantTile(q, 0, q.out, 0, q.in, g2.scalar_type()));
  at::Tensor dx = at::empty({g2.size(0), q.in}, g2.options());
  for (int64_t c = 0; c < q.in; c += tile) {
    const int64_t c1 = std::min(q.in, c + tile);
    at::Tensor wc = dequantTile(q, 0, q.out, c, c1, g2.scalar_type());  // (O, len)
    dx.narrow(1, c, c1 - c).copy_(at::mm(g2, wc));
  }
  return dx;
}

// The spec travels through autograd's saved_data (tensors and numbers as IValues).
void stash(AutogradContext* ctx, const QSpec& q) {
  auto& s = ctx->saved_data;
  s["fmt"] = static_cast<int64_t>(q.fmt);
  s["out"] = q.out;
  s["in"] = q.in;
  s["bs"] = q.blocksize;
  s["nbs"] = q.nestedBlocksize;
  s["off"] = q.offset;
  s["data"] = q.data;
  s["absmax"] = q.absmax;
  s["nabs"] = q.nestedAbsmax.defined() ? c10::IValue(q.nestedAbsmax) : c10::IValue();
  s["ncode"] = q.nestedCode.defined() ? c10::IValue(q.nestedCode) : c10::IValue();
  s["code"] = q.code.defined() ? c10::IValue(q.code) : c10::IValue();
  s["zeros"] = q.zeros.defined() ? c10::IValue(q.zeros) : c10::IValue();
}
QSpec unstash(AutogradContext* ctx) {
  auto& s = ctx->saved_data;
  QSpec q;
  q.fmt = static_cast<Fmt>(s["fmt"].toInt());
  q.out = s["out"].toInt();
  q.in = s["in"].toInt();
  q.blocksize = s["bs"].toInt();
  q.nestedBlocksize = s["nbs"].toInt();
  q.offset = s["off"].toDouble();
  q.data = s["data"].toTensor();
  q.absmax = s["absmax"].toTensor();
  auto opt = [&](const char* k) { return s[k].isTensor() ? s[k].toTensor() : at::Tensor(); };
  q.nestedAbsmax = opt("nabs");
  q.nestedCode = opt("ncode");
  q.code = opt("code");
  q.zeros = opt("zeros");
  return q;
}

struct QuantLinearFn : public torch::autograd::Function<QuantLinearFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const QSpec& q) {
    at::NoGradGuard ng;
    stash(ctx, q);
    auto sizes = x.sizes().vec();
    at::Tensor y = qmatmul(x.reshape({-1, q.in}), q);
    sizes.back() = q.out;
    return y.view(sizes);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    QSpec q = unstash(ctx);
    at::Tensor g = grads[0];
    auto sizes = g.sizes().vec();
    at::NoGradGuard ng;
    at::Tensor dx = qmatmulT(g.reshape({-1, q.out}).contiguous(), q);
    sizes.back() = q.in;
    return {dx.view(sizes), at::Tensor()};
  }
};

// ---- quantization (round to nearest) ----

const float* f32(const at::Tensor& t, const char* what) {
  if (t.scalar_type() != at::kFloat || !t.is_contiguous() || !t.device().is_cpu()) fail(std::string("quantize: ") + what + " must be a contiguous float32 CPU tensor");
  return t.data_ptr<float>();
}

// Nearest entry of code (first on ties, as argmin).
inline uint8_t nearest(const float* code, int n, float v) {
  int best = 0;
  float bd = std::fabs(v - code[0]);
  for (int k = 1; k < n; k++) {
    const float dd = std::fabs(v - code[k]);
    if (dd < bd) { bd = dd; best = k; }
  }
  return static_cast<uint8_t>(best);
}

}  // namespace

// quantize4bit(w float32, code (16) float32, blocksize) -> [packed uint8 (ceil(n/2)), absmax float32 (blocks)]
AK_OP(quantize4bit) {
  at::Tensor w = T(info, 0).contiguous();
  const float* x = f32(w, "weight");
  const float* code = f32(T(info, 1), "code");
  if (T(info, 1).numel() != 16) fail("quantize4bit: the code must have 16 entries");
  const int64_t bs = I64(info, 2);
  if (bs < 2 || bs % 2) fail("quantize4bit: blocksize must be even and >= 2");
  // NaN would slip through max/min (and the clamp would turn it into -absmax): refuse it up front.
  if (!w.isfinite().all().item<bool>()) fail("quantize4bit: the weight has a non-finite value (NaN or infinity)");
  const int64_t n = w.numel();
  const int64_t nb = (n + bs - 1) / bs;
  at::Tensor packed = at::zeros({(n + 1) / 2}, at::kByte);
  at::Tensor absmax = at::empty({nb}, at::kFloat);
  uint8_t* p = packed.data_ptr<uint8_t>();
  float* am = absmax.data_ptr<float>();
  at::parallel_for(0, nb, 64, [&](int64_t a, int64_t b) {
    for (int64_t blk = a; blk < b; blk++) {
      const int64_t e0 = blk * bs, e1 = std::min(n, e0 + bs);
      float m = 0;
      for (int64_t e = e0; e < e1; e++) m = std::max(m, std::fabs(x[e]));
      if (!std::isfinite(m)) fail("quantize4bit: the weight has a non-finite value in block " + std::to_string(blk));
      am[blk] = m;
      const float inv = m > 0 ? 1.0f / m : 0.0f;
      for (int64_t e = e0; e < e1; e++) {
        const uint8_t c = nearest(code, 16, std::min(1.0f, std::max(-1.0f, x[e] * inv)));
        // blocks are even-sized, so a byte never spans two blocks (and two threads)
        p[e >> 1] |= (e & 1) ? c : static_cast<uint8_t>(c << 4);
      }
    }
  });
  return wrapList(info.Env(), {packed, absmax});
}

// quantizeBlockwise8(x float32 (n), code (256) float32, blocksize) -> [q uint8 (n), absmax float32 (blocks)]
// (bitsandbytes' quantize_blockwise, used for the double quantization of the 4-bit scales)
AK_OP(quantizeBlockwise8) {
  at::Tensor xt = T(info, 0).contiguous();
  const float* x = f32(xt, "input");
  const float* code = f32(T(info, 1), "code");
  if (T(info, 1).numel() != 256) fail("quantizeBlockwise8: the code must have 256 entries");
  const int64_t bs = I64(info, 2);
  if (bs < 1) fail("quantizeBlockwise8: blocksize must be positive");
  const int64_t n = xt.numel(), nb = (n + bs - 1) / bs;
  at::Tensor q = at::empty({n}, at::kByte);
  at::Tensor absmax = at::empty({nb}, at::kFloat);
  uint8_t* qp = q.data_ptr<uint8_t>();
  float* am = absmax.data_ptr<float>();
  for (int64_t blk = 0; blk < nb; blk++) {
    const int64_t e0 = blk * bs, e1 = std::min(n, e0 + bs);
    float m = 0;
    for (int64_t e = e0; e < e1; e++) m = std::max(m, std::fabs(x[e]));
    am[blk] = m;
    const float inv = m > 0 ? 1.0f / m : 0.0f;
    for (int64_t e = e0; e < e1; e++) qp[e] = nearest(code, 256, std::min(1.0f, std::max(-1.0f, x[e] * inv)));
  }
  return wrapList(info.Env(), {q, absmax});
}

// quantizeInt8Rows(w float32 (O, I)) -> [q int8 (O, I), scb float32 (O)]: q = round(w * 127 / absmax(row))
AK_OP(quantizeInt8Rows) {
  at::Tensor w = T(info, 0).contiguous();
  f32(w, "weight");
  if (w.dim() != 2) fail("quantizeInt8Rows needs a 2-D weight");
  if (!w.isfinite().all().item<bool>()) fail("quantizeInt8Rows: the weight has a non-finite value");
  at::Tensor scb = w.abs().amax(1);
  at::Tensor q = (w * (127.0 / scb.clamp_min(1e-30)).unsqueeze(1)).round().clamp(-127, 127).to(at::kChar);
  return wrapList(info.Env(), {q, scb});
}

// quantizeInt4(w float32 (O, I), group) -> [packed uint8, scales float32 (O*I/group), zeros uint8]
// GPTQ's round-to-nearest grid: the range always includes 0, scale = (max - min) / 15.
AK_OP(quantizeInt4) {
  at::Tensor w = T(info, 0).contiguous();
  const float* x = f32(w, "weight");
  if (w.dim() != 2) fail("quantizeInt4 needs a 2-D weight");
  const int64_t g = I64(info, 1);
  if (!w.isfinite().all().item<bool>()) fail("quantizeInt4: the weight has a non-finite value (NaN or infinity)");
  if (g < 2 || g % 2 || w.size(1) % g) fail("quantizeInt4: the group size must be even and divide the input size " + std::to_string(w.size(1)) + ", got " + std::to_string(g));
  const int64_t n = w.numel(), nb = n / g;
  at::Tensor packed = at::zeros({n / 2}, at::kByte);
  at::Tensor scales = at::empty({nb}, at::kFloat);
  at::Tensor zeros = at::empty({nb}, at::kByte);
  uint8_t* p = packed.data_ptr<uint8_t>();
  float* sc = scales.data_ptr<float>();
  uint8_t* zp = zeros.data_ptr<uint8_t>();
  at::parallel_for(0, nb, 64, [&](int64_t a, int64_t b) {
    for (int64_t blk = a; blk < b; blk++) {
      const int64_t e0 = blk * g, e1 = e0 + g;
      float lo = 0, hi = 0;
      for (int64_t e = e0; e < e1; e++) { lo = std::min(lo, x[e]); hi = std::max(hi, x[e]); }
      if (!std::isfinite(lo) || !std::isfinite(hi)) fail("quantizeInt4: the weight has a non-finite value");
      if (lo == 0 && hi == 0) { lo = -1; hi = 1; }
      const float s = (hi - lo) / 15.0f;
      const float z = std::nearbyint(-lo / s);
      sc[blk] = s;
      zp[blk] = static_cast<uint8_t>(z);
      for (int64_t e = e0; e < e1; e++) {
        const uint8_t c = static_cast<uint8_t>(std::min(15.0f, std::max(0.0f, std::nearbyint(x[e] / s) + z)));
        p[e >> 1] |= (e & 1) ? c : static_cast<uint8_t>(c << 4);
      }
    }
  });
  return wrapList(info.Env(), {packed, scales, zeros});
}

// dequantize(spec, dtype, reference?, [r0, r1, c0, c1]?) -> (r1-r0, c1-c0), the whole weight by default
AK_OP(dequantize) {
  QSpec q = parseSpec(info[0]);
  const at::ScalarType dt = Dtype(info, 1);
  const bool ref = Has(info, 2) && B(info, 2);
  int64_t r0 = 0, r1 = q.out, c0 = 0, c1 = q.in;
  if (Has(info, 3)) {
    auto box = IntList(info, 3);
    if (box.size() != 4) fail("dequantize: the box must be [r0, r1, c0, c1]");
    r0 = box[0]; r1 = box[1]; c0 = box[2]; c1 = box[3];
    if (r0 < 0 || r1 > q.out || r0 >= r1 || c0 < 0 || c1 > q.in || c0 >= c1) fail("dequantize: the box is outside the weight");
  }
  AK_RET(dequantTile(q, r0, r1, c0, c1, dt, ref));
}

// quantLinear(x (..., I), spec) -> (..., O) = x W^T, differentiable in x
AK_OP(quantLinear) {
  auto& x = T(info, 0);
  QSpec q = parseSpec(info[1]);
  if (x.dim() < 1 || x.size(-1) != q.in) fail("quantLinear: input's last dimension is " + std::to_string(x.dim() ? x.size(-1) : 0) + " but the quantized weight takes " + std::to_string(q.in));
  if (!at::isFloatingType(x.scalar_type())) fail("quantLinear: the input must be floating point");
  if (x.device() != q.data.device()) fail("quantLinear: input and weight are on different devices");
  AK_RET(QuantLinearFn::apply(x, q));
}

void registerQuant(Napi::Object e) {
  AK_REG(e, quantize4bit);
  AK_REG(e, quantizeBlockwise8);
  AK_REG(e, quantizeInt8Rows);
  AK_REG(e, quantizeInt4);
  AK_REG(e, dequantize);
  AK_REG(e, quantLinear);
}
