// adapterkit native shim: one process group per process for data-parallel training. c10d's TCPStore
// (rank 0 hosts it) is the rendezvous, Gloo moves the bytes. Every collective waits with the group's
// timeout, so a dead or stuck peer becomes a JavaScript Error instead of a hang.
//
// Built only when the c10d and gloo headers are there (Debian: libtorch-dev + libgloo-dev); otherwise
// the entries exist and throw "built without c10d", and the rest of the addon is unaffected.
#include "common.h"
#include <chrono>

// (-DAK_NO_C10D forces the fallback, to check that it still builds.)
#if !defined(AK_NO_C10D) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>) && __has_include(<gloo/algorithm.h>)
// ProcessGroupGloo.hpp declares its class only under USE_C10D_GLOO, the flag libtorch itself was built
// with; the symbols are in libtorch_cpu.so (nm -DC libtorch_cpu.so | grep ProcessGroupGloo).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#define AK_HAVE_C10D 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

using namespace ak;

#ifdef AK_HAVE_C10D

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  int rank = 0;
  int worldSize = 1;
  std::chrono::milliseconds timeout{0};
  bool broken = false;  // a collective failed: its worker thread may still be blocked in Gloo
};

// Deliberately never destroyed at exit: ~ProcessGroupGloo joins its worker threads, which would hang
// a process leaving after a failed collective. destroyProcessGroup() frees it when that is safe.
Group* g_group = nullptr;

Group& group(const char* op) {
  if (!g_group) fail(std::string(op) + ": no process group; call initProcessGroup() first");
  if (g_group->broken) fail(std::string(op) + ": the process group failed earlier (a peer died or timed out); destroy it and start again");
  return *g_group;
}

// Waits for a collective with the group's timeout; any failure names the op, the rank and the cause.
void await(Group& g, const c10::intrusive_ptr<c10d::Work>& work, const char* op) {
  try {
    work->wait(g.timeout);
  } catch (const std::exception& e) {
    g.broken = true;
    std::string msg = e.what();
    if (auto* ce = dynamic_cast<const c10::Error*>(&e)) msg = ce->what_without_backtrace();
    fail(std::string(op) + " failed on rank " + std::to_string(g.rank) + " of " + std::to_string(g.worldSize) + ": " + msg +
         " (a peer process died, or did not reach the same collective within " + std::to_string(g.timeout.count()) + " ms)");
  }
}

// Gloo reads and writes dense CPU memory: a strided or non-CPU tensor is refused by name.
void checkTensor(const at::Tensor& t, const char* op) {
  if (!t.device().is_cpu()) fail(std::string(op) + ": the gloo backend takes CPU tensors, got one on " + t.device().str());
  if (!t.is_contiguous()) fail(std::string(op) + ": the tensor must be contiguous (call contiguous() first)");
}

}  // namespace

// initProcessGroup(backend, rank, worldSize, masterAddr, masterPort, timeoutMs, interface?)
AK_OP(initProcessGroup) {
  std::string backend = S(info, 0);
  if (backend == "nccl") {
    fail("backend 'nccl' is not available: this addon is built against a libtorch without CUDA/NCCL "
         "(Debian's libtorch 1.13 is CPU-only); use backend 'gloo', or rebuild against a CUDA libtorch (LIBTORCH=/path)");
  }
  if (backend != "gloo") fail("unknown backend '" + backend + "' (expected 'gloo' or 'nccl')");
  if (g_group) fail("initProcessGroup: a process group is already initialised in this process; call destroyProcessGroup() first");
  int64_t rank = I64(info, 1), world = I64(info, 2), port = I64(info, 4), ms = I64(info, 5);
  std::string addr = S(info, 3);
  if (world < 1 || rank < 0 || rank >= world) fail("initProcessGroup: rank " + std::to_string(rank) + " is outside a world of " + std::to_string(world));
  if (port < 1 || port > 65535) fail("initProcessGroup: masterPort must be 1..65535, got " + std::to_string(port));
  if (ms < 1) fail("initProcessGroup: timeoutMs must be positive");
  auto g = std::make_unique<Group>();
  g->rank = static_cast<int>(rank);
  g->worldSize = static_cast<int>(world);
  g->timeout = std::chrono::milliseconds(ms);
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(port);
  so.isServer = rank == 0;
  so.numWorkers = static_cast<size_t>(world);
  so.waitWorkers = true;
  so.timeout = g->timeout;
  try {
    g->store = c10::make_intrusive<c10d::TCPStore>(addr, so);
  } catch (const c10::Error& e) {
    fail("initProcessGroup: rank " + std::to_string(rank) + " could not meet the other " + std::to_string(world - 1) + " process(es) at " + addr + ":" +
         std::to_string(port) + " within " + std::to_string(ms) + " ms: " + e.what_without_backtrace());
  }
  auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
  // The interface to talk on: the one named, else loopback for a local master, else the address the
  // host name resolves to (what torch.distributed does).
  std::string iface = Has(info, 6) ? S(info, 6) : "";
  bool local = addr == "localhost" || addr.rfind("127.", 0) == 0;
  opts->devices.push_back(!iface.empty() ? c10d::ProcessGroupGloo::createDeviceForInterface(iface)
                          : local        ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                         : c10d::ProcessGroupGloo::createDefaultDevice());
  opts->threads = 1;  // collectives run one at a time, in call order
  g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, g->rank, g->worldSize, opts);
  g_group = g.release();
  return info.Env().Undefined();
}

// allReduce(t, op): in place; op is "sum", "avg", "max" or "min" (avg = sum / worldSize, Gloo has no avg).
AK_OP(allReduce) {
  Group& g = group("allReduce");
  at::Tensor& t = T(info, 0);
  checkTensor(t, "allReduce");
  std::string op = S(info, 1);
  c10d::AllreduceOptions o;
  if (op == "sum" || op == "avg") o.reduceOp = c10d::ReduceOp::SUM;
  else if (op == "max") o.reduceOp = c10d::ReduceOp::MAX;
  else if (op == "min") o.reduceOp = c10d::ReduceOp::MIN;
  else fail("allReduce: op must be sum, avg, max or min, got '" + op + "'");
  std::vector<at::Tensor> ts{t};
  await(g, g.pg->allreduce(ts, o), "allReduce");
  if (op == "avg") {
    at::NoGradGuard ng;
    t.div_(g.worldSize);
  }
  return info.Env().Undefined();
}

// broadcast(t, root): in place; every rank ends with root's values.
AK_OP(broadcast) {
  Group& g = group("broadcast");
  at::Tensor& t = T(info, 0);
  checkTensor(t, "broadcast");
  int64_t root = I64(info, 1);
  if (root < 0 || root >= g.worldSize) fail("broadcast: root " + std::to_string(root) + " is outside a world of " + std::to_string(g.worldSize));
  c10d::BroadcastOptions o;
  o.rootRank = root;
  std::vector<at::Tensor> ts{t};
  await(g, g.pg->broadcast(ts, o), "broadcast");
  return info.Env().Undefined();
}

// allGather(t) -> [t of rank 0, t of rank 1, ...] (new tensors; every rank must pass the same shape).
AK_OP(allGather) {
  Group& g = group("allGather");
  at::Tensor& t = T(info, 0);
  checkTensor(t, "allGather");
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < g.worldSize; r++) out[0].push_back(at::empty_like(t));
  std::vector<at::Tensor> in{t};
  await(g, g.pg->allgather(out, in), "allGather");
  return wrapList(info.Env(), out[0]);
}

AK_OP(barrier) {
  Group& g = group("barrier");
  await(g, g.pg->barrier(), "barrier");
  return info.Env().Undefined();
}

// destroyProcessGroup(): frees the group (no-op without one). After a failure the group is abandoned
// instead, since its worker thread may still be blocked inside Gloo until its own timeout.
AK_OP(destroyProcessGroup) {
  if (g_group && !g_group->broken) delete g_group;
  g_group = nullptr;
  return info.Env().Undefined();
}

AK_OP(distributedAvailable) { return Napi::Boolean::New(info.Env(), true); }

#else  // built without the c10d/gloo headers

static Napi::Value unavailable(const Napi::CallbackInfo&) {
  fail("adapterkit was built without c10d (torch/csrc/distributed/c10d or gloo headers missing): install libgloo-dev "
       "(Debian) or use a libtorch that ships them, then rebuild the addon (npx node-gyp rebuild)");
}
#define AK_UNAVAILABLE(name) AK_OP(name) { return unavailable(info); }
AK_UNAVAILABLE(initProcessGroup)
AK_UNAVAILABLE(allReduce)
AK_UNAVAILABLE(broadcast)
AK_UNAVAILABLE(allGather)
AK_UNAVAILABLE(barrier)
AK_OP(destroyProcessGroup) { return info.Env().Undefined(); }
AK_OP(distributedAvailable) { return Napi::Boolean::New(info.Env(), false); }

#endif

void registerDistributed(Napi::Object exports) {
  AK_REG(exports, initProcessGroup);
  AK_REG(exports, allReduce);
  AK_REG(exports, broadcast);
  AK_REG(exports, allGather);
  AK_REG(exports, barrier);
  AK_REG(exports, destroyProcessGroup);
  AK_REG(exports, distributedAvailable);
}
