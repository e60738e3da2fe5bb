// Training: optimizers, schedules, clipping, metrics, checkpoints, the trainer.
export { AdamW, SGD, paramGroups, type Optimizer, type ParamGroup, type AdamWOptions, type SGDOptions } from './optim.js';
export { lrAt, type Schedule, type ScheduleKind } from './schedule.js';
export { clipGradNorm } from './clip.js';
export { accuracy, macroF1, perplexity, majorityAccuracy, entities, entityScores, type Entity } from './metrics.js';
export { saveCheckpoint, loadLatestCheckpoint, type TrainState, type Checkpoint } from './checkpoint.js';
export { Trainer, DEFAULT_TRAINER, type TrainerConfig, type TrainerOptions, type TrainResult, type EvalResult } from './trainer.js';
export { lossParts, fusedCausalLmLoss, itemCount, type TrainTask } from './loss.js';
export { ProgressBar } from './progress.js';
export { writeCurveHtml } from './curve.js';
export { syntheticTask } from './synthetic.js';
