// The tensor engine's public surface (re-exported by src/index.ts).
export { Tensor, type Scalar, type TensorOrScalar, type NestedArray, type ValuesIndices } from './tensor.js';
export { TorchError } from './errors.js';
export { type DType, type Device, type TypedArray, DTYPE_BYTES, isFloating } from './dtype.js';
export { tidy, scope, keep, Scope, scopeDepth } from './scope.js';
export {
  tensor, fromBytes, scalar, zeros, ones, empty, full, zerosLike, onesLike, fullLike, arange, eye,
  rand, randn, randint, multinomial, type TensorOptions, type RandomOptions,
} from './creation.js';
export {
  cat, stack, where, matmul, bmm, outer, addmm, linear, svd, qr, inv, layerNorm, dropout, embedding,
  crossEntropy, linearCrossEntropy, loraGatherAdd, type CrossEntropyOptions,
} from './functional.js';
export {
  setNumThreads, getNumThreads, setAllocatorCaching, manualSeed, torchVersion, cuda, liveTensors, isGradEnabled, noGrad, enableGrad,
  configureRuntime, configureRuntimeOnce, setFlushDenormal, engineInfo, autoDtype, resolveDtype, type RuntimeOptions, type EngineInfo,
} from './runtime.js';
export { readCpuInfo, parseCpuInfo, chooseDtype, settleByProbe, blasCoreType, type CpuInfo, type DtypeChoice, type ComputeDtype } from './cpu.js';
export { startOpProfiler, stopOpProfiler, groupByFamily, opFamily, type OpTime } from './profiler.js';
export { distributedAvailable, type Backend, type ReduceOp } from './collectives.js';
