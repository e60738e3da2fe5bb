#!/usr/bin/env python3
"""PEFT conformance fixtures: adapter folders written the way PEFT writes them today, with outputs
computed by an independent loader that follows PEFT's source (no `peft`, no `transformers`).

    /usr/bin/python3 scripts/make_peft_conformance.py            # writes test/fixtures/peft-conformance/
    /usr/bin/python3 scripts/make_peft_conformance.py --check ADAPTER_DIR BASE_DIR
        # round trip: loads an adapter folder (e.g. one adapterkit saved) with the loader below and
        # prints {"outputs": [...], "adapted": [...]} as JSON, for row 0 of BASE_DIR's expected inputs

Where each expected value comes from: base weights and forward passes are those of
scripts/make_hf_fixtures.py (HF's math re-implemented in plain torch; test/fixtures/hf-ref/); the
adapter tensors are random (seeded) and written with PEFT's key names; `load_peft_dir` below re-reads
the folder from disk and applies PEFT's rules, each cited to the PEFT source file and function
(huggingface/peft at 5d602fdb, src/peft/...). Every case is computed twice, with the adapter MERGED
into the weights and UNMERGED (PEFT's layer forward), and the two must agree to 1e-5.
"""

import contextlib
import json
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_fixtures as hf  # noqa: E402
import make_peft_fixtures as mp  # noqa: E402  (PEFT helpers: pattern keys, scaling, Adapter, unmerged hooks)

OUT = os.path.join(hf.ROOT, "test", "fixtures", "peft-conformance")
HF_REF = os.path.join(hf.ROOT, "test", "fixtures", "hf-ref")
PREFIX = "base_model.model."
# What PEFT at 5d602fdb (a 0.20.1 dev install) writes into peft_version (config.py _get_peft_version).
PEFT_VERSION = "0.20.1.dev0@5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40"


# ----------------------------------------------------------------------------
# adapter_config.json exactly as LoraConfig.save_pretrained writes it
# ----------------------------------------------------------------------------

def peft_config(**over):
    """config.py PeftConfigMixin.save_pretrained: json.dumps(to_dict(), indent=2, sort_keys=True), sets
    as lists; lora/config.py LoraConfig.to_dict pops runtime_config. Every field of today's LoraConfig
    (and of PeftConfig: peft_version, auto_mapping, revision, inference_mode, ...)."""
    c = {
        "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None, "auto_mapping": None,
        "base_model_name_or_path": None, "bias": "none", "corda_config": None, "ensure_weight_tying": False,
        "eva_config": None, "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "kasa_config": None, "layer_replication": None, "layers_pattern": None,
        "layers_to_transform": None, "loftq_config": {}, "lora_alpha": 8, "lora_bias": False,
        "lora_dropout": 0.0, "lora_ga_config": None, "megatron_config": None, "megatron_core": "megatron.core",
        "modules_to_save": None, "monteclora_config": None, "peft_type": "LORA", "peft_version": PEFT_VERSION,
        "qalora_group_size": 16, "r": 8, "rank_pattern": {}, "revision": None, "target_modules": None,
        "target_parameters": None, "task_type": "CAUSAL_LM", "trainable_token_indices": None,
        "use_bdlora": None, "use_dora": False, "use_qalora": False, "use_rslora": False, "velora_config": None,
    }
    for k in over:
        assert k in c, k
    c.update(over)
    return c


# ----------------------------------------------------------------------------
# PEFT's rules (independent of adapterkit), read from PEFT's source
# ----------------------------------------------------------------------------

def module_names(sd):
    """Every module path of the model (prefixes of its state-dict keys), as named_modules()."""
    out = set()
    for k in sd:
        parts = k.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            out.add(".".join(parts[:i]))
    return sorted(out)


def check_target_module_exists(cfg, key):
    """tuners/tuners_utils.py check_target_module_exists."""
    ex = cfg.get("exclude_modules")
    if ex:
        if isinstance(ex, str):
            if re.fullmatch(ex, key):
                return False
        elif key in ex or any(key.endswith("." + e) for e in ex):
            return False
    mts = cfg.get("modules_to_save")
    if mts and any(re.match(rf"(^|.*\.){m}($|\..*)", key) for m in mts):
        return False  # "Adapters should never match on modules to save modules"
    tm = cfg["target_modules"]
    if isinstance(tm, str):
        return re.fullmatch(tm, key) is not None
    if key in tm:
        return True  # listed in full: layers_to_transform is not consulted
    found = any(key.endswith("." + t) for t in tm)
    idxs, pat = cfg.get("layers_to_transform"), cfg.get("layers_pattern")
    using = idxs is not None and (len(idxs) != 0 if isinstance(idxs, list) else True)
    if using and found:
        m = None
        if pat is None or len(pat) == 0:
            m = re.match(r".*?\.[^.]*\.(\d+)\.", key)
        else:
            for p in [pat] if isinstance(pat, str) else pat:
                m = re.match(rf".*?\.{p}\.(\d+)\.", key)
                if m is not None:
                    break
        if m is None:
            return False
        i = int(m.group(1))
        return i == idxs if isinstance(idxs, int) else i in idxs
    return found


def modules_to_save_wrapped(cfg, sd):
    """utils/other.py _set_trainable: every module whose name endswith an entry (no dot boundary);
    entries that match nothing are fine (strict_module_check=False)."""
    out = []
    for key in module_names(sd):
        if any(key.endswith(t) for t in cfg.get("modules_to_save") or []):
            if not any(key.startswith(w + ".") for w in out):
                out.append(key)
    return out


REFUSED = ["alora_invocation_tokens", "arrow_config", "target_parameters", "use_qalora", "velora_config",
           "monteclora_config", "use_bdlora", "kasa_config",
           "megatron_config", "ensure_weight_tying"]


def replicate_layers(base_sd, base_cfg, layer_map):
    """tuners/tuners_utils.py replicate_layers: the layer list becomes the [start, end) ranges of the
    old one, each entry sharing the old layer's weights (clone_module(share_weights=True)), and
    config.num_hidden_layers its length. Returns the state dict and config of the deeper model."""
    if not layer_map:
        return base_sd, base_cfg
    plan = [i for start, end in layer_map for i in range(start, end)]
    pre = "model.layers." if any(k.startswith("model.layers.") for k in base_sd) else next(
        p for p in ("bert.encoder.layer.", "roberta.encoder.layer.") if any(k.startswith(p) for k in base_sd))
    sd = {k: v for k, v in base_sd.items() if not k.startswith(pre)}
    for j, i in enumerate(plan):
        for k, v in base_sd.items():
            if k.startswith(f"{pre}{i}."):
                # the same storage (shared weights); a view, so each copy is its own object for the
                # unmerged forward's per-weight hooks
                sd[f"{pre}{j}." + k[len(f"{pre}{i}."):]] = v.view_as(v)
    cfg = dict(base_cfg, num_hidden_layers=len(plan))
    return sd, cfg


def input_embedding(sd):
    """model.get_input_embeddings()'s name for these architectures."""
    return next(k[: -len(".weight")] for k in sorted(sd) if re.search(r"(^|\.)(embed_tokens|wte|word_embeddings)\.weight$", k))


def token_targets(cfg, sd):
    """utils/other.py: a list trains rows of the input embedding; a dict {name: ids} those of every
    module whose name endswith the name (_set_trainable with TrainableTokensWrapper)."""
    tti = cfg.get("trainable_token_indices")
    if tti is None:
        return {}
    if isinstance(tti, list):
        return {input_embedding(sd): tti}
    out = {}
    for name, ids in tti.items():
        for m in module_names(sd):
            if m.endswith(name) and m + ".weight" in sd:
                out[m] = ids
    return out


class BiasAdapter(mp.Adapter):
    """mp.Adapter plus lora_bias (lora/layer.py: lora_B = nn.Linear(r, out, bias=lora_bias); forward
    lora_B(lora_A(x)) * scaling includes the bias; Linear.merge: base bias += lora_B.bias * scaling)."""

    def __init__(self, module, A, B, scaling, fifo, magnitude=None, lora_b_bias=None):
        super().__init__(module, A, B, scaling, fifo, magnitude)
        self.lora_b_bias = lora_b_bias

    def extra_output(self, x, w):
        y = super().extra_output(x, w)
        return y if self.lora_b_bias is None else y + self.lora_b_bias * self.scaling


def load_peft_dir(adapter_dir, base_sd, model_type):
    """Returns (cfg, {module: BiasAdapter}, sd) with every saved non-LoRA tensor (biases,
    modules_to_save copies) put into sd, as PeftModel.from_pretrained would leave the model."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA"
    for k in REFUSED:  # this loader implements none of them
        assert cfg.get(k) in (None, False, [], {}), (k, cfg[k])
    tensors = hf.load_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    assert all(k.startswith(PREFIX) for k in tensors)
    t = {k[len(PREFIX):]: v for k, v in tensors.items()}
    linear = mp.base_linear_modules(base_sd, model_type)
    targeted = sorted(m for m in linear if check_target_module_exists(cfg, m))
    adapters = {}
    for m in targeted:
        r, alpha = mp.resolve_r_alpha(cfg, m)
        fifo = linear[m] == "Conv1D"  # lora/layer.py dispatch_default forces it from the layer type
        A, B = t.pop(m + ".lora_A.weight"), t.pop(m + ".lora_B.weight")
        bb = t.pop(m + ".lora_B.bias", None)
        assert (bb is not None) == bool(cfg.get("lora_bias")), m
        mag = t.pop(m + ".lora_magnitude_vector", None) if cfg.get("use_dora") else None
        adapters[m] = BiasAdapter(m, A, B, mp.lora_scaling(r, alpha, cfg["use_rslora"]), fifo, mag, bb)
    sd = dict(base_sd)
    # trainable_tokens/layer.py get_merged_weights: W.index_copy(0, indices, delta) -- the delta
    # REPLACES the rows. A tied LM head (GPT-2) reads the same weight, so it sees them too.
    for emb, ids in token_targets(cfg, base_sd).items():
        delta = t.pop(emb + ".token_adapter.trainable_tokens_delta")
        assert delta.shape == (len(ids), base_sd[emb + ".weight"].shape[1]), emb
        sd[emb + ".weight"] = base_sd[emb + ".weight"].index_copy(0, torch.tensor(ids), delta)
    wrappers = modules_to_save_wrapped(cfg, base_sd)
    copies = {}
    for k in list(t):
        v = t.pop(k)
        owner = next((w for w in wrappers if k.startswith(w + ".")), None)
        if owner is not None:
            rest = k[len(owner) + 1:]
            if rest.startswith("original_module."):  # bias="all": the frozen original's bias
                sd[owner + "." + rest[len("original_module."):]] = v
            elif rest.startswith("modules_to_save."):  # bias="all": "<w>.modules_to_save.bias" (adapter name cut)
                pass  # same tensor as "<w>.bias"
            else:  # ModulesToSaveWrapper.adapter_state_dict: "<wrapper>.<param>" is the copy
                copies[k] = v
            continue
        # tuners_utils.py _get_learnable_bias_state_dict: "<m>.base_layer.bias" for tuner layers,
        # plain state-dict names otherwise; set_peft_model_state_dict loads them with strict=False.
        name = k.replace(".base_layer.", ".")
        assert name.endswith(".bias") and name in base_sd and base_sd[name].shape == v.shape, k
        sd[name] = v
    for k, v in copies.items():  # the copy is what runs while the adapter is active
        assert k in base_sd and base_sd[k].shape == v.shape, k
        sd[k] = v
    return cfg, adapters, sd


def merged_sd(sd, adapters):
    out = dict(sd)
    for m, a in adapters.items():
        out[m + ".weight"] = a.merged_weight(sd[m + ".weight"])
        if a.lora_b_bias is not None:
            out[m + ".bias"] = sd[m + ".bias"] + a.lora_b_bias * a.scaling
    return out


@contextlib.contextmanager
def unmerged(sd, adapters):
    with mp.unmerged(sd, adapters) as hits:
        yield hits


# ----------------------------------------------------------------------------
# running a base + adapter
# ----------------------------------------------------------------------------

FORWARDS = {"gpt2": hf.gpt2_forward, "llama": hf.llama_forward, "qwen2": hf.llama_forward,
            "mistral": hf.llama_forward, "bert": hf.bert_forward, "roberta": hf.bert_forward}


def base_inputs(base_dir):
    e = hf.load_safetensors(os.path.join(base_dir, "expected.safetensors"))
    ex = {"ids": e["input_ids"][:1]}
    if "attention_mask" in e:
        ex["mask"] = e["attention_mask"][:1]
        assert ex["mask"].all()
    if "token_type_ids" in e:
        ex["tt"] = e["token_type_ids"][:1]
    return ex, e


def outputs(base_cfg, sd, ex):
    """Causal LMs: log p(ids[i+1] | ids[:i+1]) (T-1 values); classifiers: logits of row 0, flattened."""
    fwd = FORWARDS[base_cfg["model_type"]]
    ids = ex["ids"]
    t = ids.shape[1]
    if "ForCausalLM" in base_cfg["architectures"][0] or "LMHead" in base_cfg["architectures"][0]:
        logits = fwd(sd, base_cfg, ids, torch.ones(1, t, dtype=torch.int64), torch.arange(t)[None])["logits"][0]
        lp = torch.log_softmax(logits, dim=-1)
        return torch.stack([lp[i, ids[0, i + 1]] for i in range(t - 1)])
    return fwd(sd, base_cfg, ids, ex["mask"], ex.get("tt"))["logits"][0].reshape(-1)


def run_dir(adapter_dir, base_dir):
    with open(os.path.join(base_dir, "config.json")) as f:
        base_cfg = json.load(f)
    orig_sd = base_sd = hf.load_safetensors(os.path.join(base_dir, "model.safetensors"))
    orig_cfg = base_cfg
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        base_sd, base_cfg = replicate_layers(base_sd, base_cfg, json.load(f).get("layer_replication"))
    cfg, adapters, sd = load_peft_dir(adapter_dir, base_sd, base_cfg["model_type"])
    ex, _ = base_inputs(base_dir)
    merged = outputs(base_cfg, merged_sd(sd, adapters), ex)
    with unmerged(sd, adapters) as hits:
        un = outputs(base_cfg, sd, ex)
    assert set(hits) == set(adapters), (sorted(hits), sorted(adapters))
    assert (merged - un).abs().max().item() < 1e-5
    base = outputs(orig_cfg, orig_sd, ex)  # the model before the adapter (and before any replication)
    return cfg, adapters, merged, base, ex


# ----------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------

def perturbed(v, scale):
    return v + torch.randn(*v.shape) * scale


def build(cfg, base_sd, model_type):
    """The tensors PEFT's get_peft_model_state_dict would save for `cfg` after training (random)."""
    linear = mp.base_linear_modules(base_sd, model_type)
    targeted = sorted(m for m in linear if check_target_module_exists(cfg, m))
    out = {}
    for m in targeted:
        r, _ = mp.resolve_r_alpha(cfg, m)
        w = base_sd[m + ".weight"]
        fifo = linear[m] == "Conv1D"
        n_in, n_out = (w.shape[0], w.shape[1]) if fifo else (w.shape[1], w.shape[0])
        out[m + ".lora_A.weight"] = torch.randn(r, n_in) * 0.2
        out[m + ".lora_B.weight"] = torch.randn(n_out, r) * 0.15
        if cfg["lora_bias"]:
            out[m + ".lora_B.bias"] = torch.randn(n_out) * 0.2
    for emb, ids in token_targets(cfg, base_sd).items():  # trained rows, saved whole (not as a difference)
        rows = base_sd[emb + ".weight"][torch.tensor(ids)]
        out[emb + ".token_adapter.trainable_tokens_delta"] = rows + torch.randn(*rows.shape) * 0.5
    wrappers = modules_to_save_wrapped(cfg, base_sd)
    for w in wrappers:  # ModulesToSaveWrapper copies: "<wrapper>.<param>"
        for k in sorted(base_sd):
            if k.startswith(w + "."):
                out[k] = torch.randn(*base_sd[k].shape) * (0.5 if base_sd[k].dim() == 2 else 0.2)
    bias = cfg["bias"]
    if bias != "none":
        for k in sorted(base_sd):
            if not k.endswith(".bias"):
                continue
            m = k[: -len(".bias")]
            owner = next((w for w in wrappers if k.startswith(w + ".")), None)
            if owner is not None:
                if bias == "all":  # the original's bias and the copy's under "modules_to_save."
                    rest = k[len(owner) + 1:]
                    out[f"{owner}.original_module.{rest}"] = base_sd[k]
                    out[f"{owner}.modules_to_save.{rest}"] = out[k]
                continue
            if m in targeted:
                out[m + ".base_layer.bias"] = perturbed(base_sd[k], 0.3)
            elif bias == "all":
                out[k] = perturbed(base_sd[k], 0.3)
    return {PREFIX + k: v.contiguous() for k, v in out.items()}


CASES = [
    # name, base, config, what it pins down
    ("gpt2-bias-all-layers", "gpt2", peft_config(
        base_model_name_or_path="hf-ref/gpt2", r=4, lora_alpha=8, target_modules=["c_attn", "c_fc", "c_proj"],
        layers_to_transform=[1], layers_pattern=["h", "layers"], bias="all", fan_in_fan_out=True,
        init_lora_weights="pissa_niter_4"),
     "bias all (every .bias saved, wrapped ones as base_layer.bias); layers_pattern list; layer 1 only; pissa_niter_4 string; Conv1D fan_in_fan_out true"),
    ("qwen2-lora-bias-exclude", "qwen2", peft_config(
        base_model_name_or_path="hf-ref/qwen2", r=4, lora_alpha=16, target_modules=["k_proj", "o_proj", "q_proj", "v_proj"],
        exclude_modules=["o_proj", "model.layers.0.self_attn.k_proj"], lora_bias=True, bias="lora_only",
        init_lora_weights=False),
     "lora_bias (lora_B.bias, merged into the q/k/v bias); bias lora_only (base_layer.bias of adapted layers); exclude_modules by suffix and full path"),
    ("llama-layer-int-olora", "llama", peft_config(
        base_model_name_or_path="hf-ref/llama", r=2, lora_alpha=4, use_rslora=True,
        target_modules=["down_proj", "model.layers.0.mlp.up_proj", "q_proj", "v_proj"],
        layers_to_transform=1, layers_pattern="layers", init_lora_weights="olora",
        alpha_pattern={"v_proj": 8}),
     "layers_to_transform as an int; a target listed in full is taken whatever its layer; rsLoRA + alpha_pattern; olora string"),
    ("gpt2-trainable-tokens-tied", "gpt2", peft_config(
        base_model_name_or_path="hf-ref/gpt2", r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True,
        trainable_token_indices=[61, 66, 13]),
     "trainable_token_indices (list: the input embedding); the tied LM head reads the same rows"),
    ("llama-trainable-tokens-dict", "llama", peft_config(
        base_model_name_or_path="hf-ref/llama", r=2, lora_alpha=4, target_modules=["q_proj"],
        trainable_token_indices={"embed_tokens": [22, 70, 33]}),
     "trainable_token_indices as {module: ids}; untied head"),
    ("llama-layer-replication", "llama", peft_config(
        base_model_name_or_path="hf-ref/llama", r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"],
        layer_replication=[[0, 2], [1, 2], [0, 1]]),
     "layer_replication [[0,2],[1,2],[0,1]]: layers 0 1 1 0 sharing weights, each copy with its own LoRA"),
    ("roberta-seqcls-classifier-score", "roberta-seqcls", peft_config(
        base_model_name_or_path="hf-ref/roberta-seqcls", r=4, lora_alpha=8, task_type="SEQ_CLS",
        target_modules=["dense", "query", "value"], modules_to_save=["classifier", "score"],
        init_lora_weights="gaussian"),
     "modules_to_save [classifier, score] (score matches nothing); classifier.dense is under modules_to_save so gets no LoRA although 'dense' is a target"),
    ("bert-tokcls-all-linear-eva", "bert-tokcls", peft_config(
        base_model_name_or_path="hf-ref/bert-tokcls", r=2, lora_alpha=4, task_type="TOKEN_CLS",
        target_modules=None, modules_to_save=["classifier", "score"], bias="all", init_lora_weights="eva",
        eva_config={"rho": 2.0, "tau": 0.99, "use_label_mask": True, "label_mask_value": -100, "whiten": False,
                    "adjust_scaling_factors": True}),
     "all-linear as PEFT saves it (resolved names, classifier included but guarded by modules_to_save); bias all with a modules_to_save head (original_module / modules_to_save bias keys); eva string + eva_config"),
]


def resolve_all_linear(base_sd, model_type):
    """tuners_utils.py _maybe_include_all_linear_layers for a TOKEN_CLS BERT: every Linear (no output
    embedding, task not SEQ_CLS, so the classifier stays); saved as the set of full names, sorted."""
    return sorted(mp.base_linear_modules(base_sd, model_type))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--check":
        cfg, adapters, merged, base, ex = run_dir(sys.argv[2], sys.argv[3])
        print(json.dumps({"outputs": [float(v) for v in merged], "adapted": sorted(adapters)}))
        return
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for i, (name, base, cfg, what) in enumerate(CASES):
        torch.manual_seed(5000 + i)
        base_dir = os.path.join(HF_REF, base)
        with open(os.path.join(base_dir, "config.json")) as f:
            base_cfg = json.load(f)
        mt = base_cfg["model_type"]
        base_sd, _ = replicate_layers(hf.load_safetensors(os.path.join(base_dir, "model.safetensors")), base_cfg,
                                      cfg["layer_replication"])
        if cfg["target_modules"] is None:
            cfg["target_modules"] = resolve_all_linear(base_sd, mt)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            f.write(json.dumps(cfg, indent=2, sort_keys=True))
        hf.save_safetensors(os.path.join(d, "adapter_model.safetensors"), build(cfg, base_sd, mt), metadata={"format": "pt"})
        # ---- from here on only what is on disk ----
        cfg_disk, adapters, merged, base_out, ex = run_dir(d, base_dir)
        delta = (merged - base_out).abs().max().item()
        assert delta > 0.05, (name, delta)
        exp = {
            "base_case": f"hf-ref/{base}", "input_ids": ex["ids"].tolist(),
            "attention_mask": ex["mask"].tolist() if "mask" in ex else None,
            "token_type_ids": ex["tt"].tolist() if "tt" in ex else None,
            "outputs": [float(v) for v in merged], "base_outputs": [float(v) for v in base_out],
            "output_kind": "logprobs" if base in ("gpt2", "llama", "qwen2") else "logits",
            "adapted_modules": sorted(adapters),
            "what": what,
        }
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(exp, f, indent=1)
            f.write("\n")
        rows.append((name, base, len(adapters), delta, what))
        print(f"{name:<36} adapted {len(adapters):>2}  max|adapter - base| {delta:.3f}")
    sens = sensitivity()
    write_readme(rows, sens)


def write_readme(rows, sens):
    lines = ["# PEFT conformance fixtures", "",
             "Adapter folders written the way PEFT writes them today, for `test/peft-conformance.test.ts`.", "",
             "Made by `scripts/make_peft_conformance.py` (see its header for how to run it).",
             "", "Where the values come from:", "",
             "- `adapter_config.json`: every field today's PEFT LoraConfig writes (save_pretrained: sorted keys,",
             f"  runtime_config dropped), with `peft_version` `{PEFT_VERSION}`.",
             "- `adapter_model.safetensors`: random (seeded) tensors under PEFT's saved key names.",
             "- `expected.json`: `outputs` are computed by the script's own loader (`load_peft_dir`, PEFT's rules",
             "  cited to its source) from the folder as written, over the base model's forward in",
             "  `scripts/make_hf_fixtures.py`, merged and unmerged (agreeing to 1e-5); causal LMs give",
             "  log p(ids[i+1] | ids[:i+1]) of row 0 of the base case's inputs, classifiers row 0's logits",
             "  (flattened). `base_outputs`: the base model alone. `adapted_modules`: the LoRA layers.", "",
             "| case | base | what it pins down | LoRA layers | max abs change vs base |", "|---|---|---|---|---|"]
    for name, base, n, delta, what in rows:
        lines.append(f"| `{name}` | `hf-ref/{base}` | {what} | {n} | {delta:.3f} |")
    lines += ["", "Sensitivity (max abs output change when the loader gets one rule wrong):", ""]
    lines += [f"- `{c}`: {w}: {v:.3g}" for c, w, v in sens]
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def sensitivity():
    """Each rule the cases pin down moves the outputs (so a loader that gets it wrong fails)."""
    def moved(name, edit):
        d = os.path.join(OUT, name)
        exp = json.load(open(os.path.join(d, "expected.json")))
        base_dir = os.path.join(hf.ROOT, "test", "fixtures", exp["base_case"])
        with open(os.path.join(base_dir, "config.json")) as f:
            base_cfg = json.load(f)
        base_sd = hf.load_safetensors(os.path.join(base_dir, "model.safetensors"))
        cfg, adapters, sd = load_peft_dir(d, base_sd, base_cfg["model_type"])
        adapters, sd = edit(dict(adapters), dict(sd), base_sd)
        ex, _ = base_inputs(base_dir)
        return (outputs(base_cfg, merged_sd(sd, adapters), ex) - torch.tensor(exp["outputs"])).abs().max().item()

    def base_biases(a, sd, base_sd):
        return a, {k: (base_sd[k] if k.endswith(".bias") else v) for k, v in sd.items()}

    def no_lora_bias(a, sd, base_sd):
        return {m: BiasAdapter(x.module, x.A, x.B, x.scaling, x.fan_in_fan_out, x.magnitude, None) for m, x in a.items()}, sd

    def base_head(a, sd, base_sd):
        return a, {k: (base_sd[k] if k.startswith("classifier.") else v) for k, v in sd.items()}

    def base_embeddings(a, sd, base_sd):
        return a, {k: (base_sd[k] if re.search(r"(wte|embed_tokens)\.weight$", k) else v) for k, v in sd.items()}

    checks = [
        ("gpt2-trainable-tokens-tied", "trained token rows ignored", base_embeddings),
        ("llama-trainable-tokens-dict", "trained token rows ignored", base_embeddings),
        ("gpt2-bias-all-layers", "saved biases ignored", base_biases),
        ("qwen2-lora-bias-exclude", "lora_B.bias ignored", no_lora_bias),
        ("qwen2-lora-bias-exclude", "base_layer.bias ignored", base_biases),
        ("roberta-seqcls-classifier-score", "classifier from the base", base_head),
        ("bert-tokcls-all-linear-eva", "classifier from the base", base_head),
        ("bert-tokcls-all-linear-eva", "saved biases ignored", base_biases),
    ]
    out = []
    for name, what, edit in checks:
        v = moved(name, edit)
        print(f"  sensitivity {name:<36} {what:<28} {v:.3f}")
        assert v > 1e-2, (name, what, v)
        out.append((name, what, v))
    return out


if __name__ == "__main__":
    main()
