// adapterkit native addon entry: registers each op family (one file each).
#include "common.h"

void registerMeta(Napi::Object e);
void registerCreation(Napi::Object e);
void registerMath(Napi::Object e);
void registerShape(Napi::Object e);
void registerReduce(Napi::Object e);
void registerNN(Napi::Object e);
void registerAutograd(Napi::Object e);
void registerFused(Napi::Object e);
void registerProfiler(Napi::Object e);
void registerQuant(Napi::Object e);
void registerDistributed(Napi::Object e);

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  registerMeta(exports);
  registerCreation(exports);
  registerMath(exports);
  registerShape(exports);
  registerReduce(exports);
  registerNN(exports);
  registerAutograd(exports);
  registerFused(exports);
  registerProfiler(exports);
  registerQuant(exports);
  registerDistributed(exports);
  return exports;
}

NODE_API_MODULE(adapterkit, Init)
