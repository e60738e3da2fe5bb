// Every adapter method that ships with adapterkit, registered on import (LoRA first: the default).
import './lora/index.js';
