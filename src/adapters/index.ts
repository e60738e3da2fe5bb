// The adapter layer's public surface.
export { PeftModel, BASE_ROW, type AddAdapterOptions, type PeftInput } from './peft-model.js';
export { savePeftAdapters, loadPeftAdapter, readAdapterConfig, adapterDir, type SaveOptions, type LoadAdapterOptions } from './peft-format.js';
export { registerAdapter, adapterMethod, adapterMethods, adapterMethodList, methodByName, defaultAdapterMethod } from './registry.js';
export { PEFT_FORMAT } from './format.js';
export { resolveWith, peftJsonToOptions, optionsToPeftJson, BASE_FIELDS, BASE_DEFAULTS } from './config-base.js';
export { DEFAULT_QV_TARGETS } from './targets.js';
export { LoraLayer, LoraEmbedding, type LoraConfig, type LoraOptions, type LoraInit, DEFAULT_LORA, DEFAULT_LORA_TARGETS, PEFT_LORA_FIELDS, LoraRuntime, loraRuntime, setDyloraRank, addWeightedAdapter, type Combination, type CombineOptions } from './lora/index.js';
export type { AdapterConfigBase, AdapterContext, AdapterMethod, AdapterOptions, TunerLayer, AdapterPart, AdapterCapabilities, AdapterFileFormat, MethodRuntime, InjectArgs, SaveTransformArgs, AddLayerOptions } from './types.js';
export { isTunerLayer, isAdapterPart } from './types.js';
export { IA3, Ia3Layer, type Ia3Config, type Ia3Options, resolveIa3, DEFAULT_IA3, DEFAULT_IA3_TARGETS, IA3_FIELDS } from './ia3/index.js';
export { SSF, SsfLayer, type SsfConfig, type SsfOptions, type SsfInit, resolveSsf, DEFAULT_SSF, DEFAULT_SSF_TARGETS, SSF_FIELDS } from './ssf/index.js';
export { HYDRA, HydraLayer, type HydraConfig, type HydraOptions, resolveHydra, DEFAULT_HYDRA, HYDRA_FIELDS } from './hydra/index.js';
export { BOTTLENECK, resolveBottleneck, BN_PRESETS, type BottleneckConfig, type BottleneckOptions, BottleneckSite, BnAdapter, InvertibleAdapters, NICECouplingBlock, PHMLayer, ADAPTERHUB_FORMAT } from './bottleneck/index.js';
export { PROMPT_TUNING, P_TUNING, PREFIX_TUNING, PromptEncoderPart, type PromptTuningConfig, type PTuningConfig, type PrefixTuningConfig, type PromptTuningOptions, type PTuningOptions, type PrefixTuningOptions } from './prompt/index.js';
export {
  SHIRA, LT_SFT, SPT, shiraMask, ltSftScores, sptSensitivity, SparseDiffLayer, SparseDiffSum, composeSparseDiffs, sparseDiffsOf, applySparseDiffs, sameDiff,
  resolveShira, resolveLtSft, resolveSpt, DEFAULT_SHIRA, DEFAULT_LT_SFT, DEFAULT_SPT,
  type SparseDiff, type ShiraConfig, type ShiraOptions, type LtSftConfig, type LtSftOptions, type SptConfig, type SptOptions,
} from './sparse/index.js';
export { LOKR, LokrLayer, factorization, kronSvd, energyRank, elbowRank, resolveLokr, DEFAULT_LOKR, LOKR_FIELDS, type LokrConfig, type LokrOptions, type LokrInit } from './lokr/index.js';
export { LOHA, LohaLayer, resolveLoha, DEFAULT_LOHA, LOHA_FIELDS, type LohaConfig, type LohaOptions } from './loha/index.js';
export { PACA, PacaLayer, ColumnSliceLayer, seededColumns, type PacaConfig, type PacaOptions, resolvePaca, DEFAULT_PACA, PACA_FIELDS } from './paca/index.js';
export { S2FT, S2ftLayer, type S2ftConfig, type S2ftOptions, resolveS2ft, DEFAULT_S2FT, DEFAULT_S2FT_TARGETS, S2FT_FIELDS } from './s2ft/index.js';
export { LOWBIT_LORA, LowbitLoraLayer, quantize, dequantize, fakeQuant, steQuant, packCodes, unpackCodes, type LowbitLoraConfig, type LowbitLoraOptions, resolveLowbitLora, DEFAULT_LOWBIT_LORA, LOWBIT_LORA_FIELDS } from './lowbit/index.js';
export { Stack, Fuse, Split, BatchSplit, Parallel, Average, parseSetup, validateSetup, leaves, describe as describeSetup, setupToDict, fusionName, type Block, type BlockKind, type Setup } from './composition.js';
export { compositionWeights } from './lora/layer.js';
export { MOE_LORA, MoeLoraLayer, MoeLoraRuntime, route, loadBalancingLoss, mixExperts, resolveMoeLora, expertsForLayer, DEFAULT_MOE_LORA, MOE_LORA_FIELDS, EXPERT_SHAPES, type MoeLoraConfig, type MoeLoraOptions, type ExpertShape } from './moe-lora/index.js';
export { POLY, PolyLayer, PolyRuntime, withTaskIds, polyMixingWeights, resolvePoly, DEFAULT_POLY, POLY_FIELDS, type PolyConfig, type PolyOptions } from './poly/index.js';
export { MIXDA, MixdaGate, resolveMixda, DEFAULT_MIXDA, MIXDA_FIELDS, type MixdaConfig, type MixdaOptions } from './mixda/index.js';
export { addAdapterFusion, trainAdapterFusion, saveAdapterFusion, loadAdapterFusion, deleteAdapterFusion, adapterFusions, fusionRegularizationLoss, BertFusion, FUSION_PRESETS, resolveFusionConfig, type FusionConfig, type AddFusionOptions } from './bottleneck/index.js';
