// adapterkit native shim: a light op profiler for `train --profile`. A global RecordFunction callback
// times every ATen op and autograd node and accumulates *self* time per name (time inside nested ops
// is charged to them, not to the caller), so the table adds up to the time spent in libtorch.
#include "common.h"
#include <ATen/record_function.h>
#include <chrono>
#include <map>
#include <mutex>
#include <vector>

using namespace ak;

namespace {

using Clock = std::chrono::steady_clock;

struct Frame {
  Clock::time_point start;
  double childSeconds = 0;
};

struct Stat {
  double seconds = 0;
  int64_t calls = 0;
};

std::mutex g_mu;
std::map<std::string, Stat> g_stats;
at::CallbackHandle g_handle = 0;
thread_local std::vector<Frame> t_stack;

struct Ctx : at::ObserverContext {};

std::unique_ptr<at::ObserverContext> onStart(const at::RecordFunction&) {
  t_stack.push_back({Clock::now(), 0});
  return std::make_unique<Ctx>();
}

void onEnd(const at::RecordFunction& fn, at::ObserverContext*) {
  if (t_stack.empty()) return;  // started before the profiler was switched on
  Frame f = t_stack.back();
  t_stack.pop_back();
  double total = std::chrono::duration<double>(Clock::now() - f.start).count();
  if (!t_stack.empty()) t_stack.back().childSeconds += total;
  std::lock_guard<std::mutex> lock(g_mu);
  Stat& s = g_stats[fn.name()];
  s.seconds += total - f.childSeconds;
  s.calls++;
}

}  // namespace

// profilerStart(): clears the table and installs the callback (no-op when already on).
AK_OP(profilerStart) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_stats.clear();
  if (!g_handle) {
    g_handle = at::addGlobalCallback(at::RecordFunctionCallback(onStart, onEnd)
      .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  }
  return info.Env().Undefined();
}

// profilerStop() -> [[name, selfSeconds, calls], ...]; removes the callback.
AK_OP(profilerStop) {
  if (g_handle) {
    at::removeCallback(g_handle);
    g_handle = 0;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  auto out = Napi::Array::New(info.Env(), g_stats.size());
  uint32_t i = 0;
  for (const auto& [name, s] : g_stats) {
    auto row = Napi::Array::New(info.Env(), 3);
    row.Set(0u, Napi::String::New(info.Env(), name));
    row.Set(1u, Napi::Number::New(info.Env(), s.seconds));
    row.Set(2u, Napi::Number::New(info.Env(), static_cast<double>(s.calls)));
    out.Set(i++, row);
  }
  g_stats.clear();
  return out;
}

void registerProfiler(Napi::Object exports) {
  AK_REG(exports, profilerStart);
  AK_REG(exports, profilerStop);
}
