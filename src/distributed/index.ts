// Several processes, one training run: process groups (c10d + Gloo) and data-parallel helpers.
export {
  ProcessGroup, initProcessGroup, destroyProcessGroup, currentProcessGroup, launchEnv, DEFAULT_PROCESS_GROUP,
  type ProcessGroupOptions, type LaunchEnv,
} from './process-group.js';
export { shardRange, buckets, broadcastParameters, allReduceGradients, BUCKET_BYTES } from './ddp.js';
