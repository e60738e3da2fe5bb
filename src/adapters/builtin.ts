// Every adapter method that ships with adapterkit, registered on import (LoRA first: the default).
import './lora/index.js';
import './ia3/index.js';
import './ssf/index.js';
import './hydra/index.js';
import './prompt/index.js';
import './bottleneck/index.js';
import './lokr/index.js';
import './loha/index.js';
import './paca/index.js';
import './s2ft/index.js';
import './lowbit/index.js';
import './sparse/index.js';
import './moe-lora/index.js';
import './poly/index.js';
import './mixda/index.js';
