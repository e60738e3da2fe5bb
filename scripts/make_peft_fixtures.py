#!/usr/bin/env python3
"""Independent reference fixtures for adapterkit's PEFT (LoRA / rsLoRA / DoRA) support.

Run from the repository root (after scripts/make_hf_fixtures.py has written the
base checkpoints; this script only reads them):

    /usr/bin/python3 scripts/make_peft_fixtures.py

No `peft` or `transformers` package is used.  The base-model forward passes and
the safetensors reader/writer are imported from scripts/make_hf_fixtures.py;
the PEFT semantics below were read from huggingface/peft's source and are cited
next to the code that implements them (src/peft/tuners/lora/{layer,model,config,
dora}.py, src/peft/tuners/tuners_utils.py, src/peft/utils/{other,save_and_load}.py,
src/peft/peft_model.py).

Output: test/fixtures/peft-ref/<case>/{adapter_config.json,
adapter_model.safetensors, expected.json} plus test/fixtures/peft-ref/README.md.

Everything in expected.json is computed from the files as written to disk (the
adapter is re-read and re-resolved from adapter_config.json, as a loader would),
twice: once with the adapter MERGED into the base weights and once UNMERGED
(PEFT's layer forward in every targeted layer); the two must agree to 1e-5.
"""

import collections
import contextlib
import json
import math
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_fixtures as hf  # noqa: E402  (forward functions + safetensors I/O; has a __main__ guard)

ROOT = hf.ROOT
HF_REF = os.path.join(ROOT, "test", "fixtures", "hf-ref")
OUT = os.path.join(ROOT, "test", "fixtures", "peft-ref")
PREFIX = "base_model.model."  # PeftModel.base_model (LoraModel) .model (the transformers model)
TOL = 1e-5  # merged vs unmerged (logprobs / logits)


# ----------------------------------------------------------------------------
# PEFT semantics
# ----------------------------------------------------------------------------

def target_module_matches(key, target_modules):
    """tuners/tuners_utils.py check_target_module_exists (list form): the module name
    equals a target, or ends with "." + target.  So GPT-2's "c_proj" hits BOTH
    h.{i}.attn.c_proj and h.{i}.mlp.c_proj, BERT's "query" hits attention.self.query."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, key) is not None
    return key in target_modules or any(key.endswith("." + t) for t in target_modules)


def modules_to_save_matches(key, modules_to_save):
    """utils/other.py _set_trainable: `any(key.endswith(target_key) ...)` -- plain suffix,
    no dot boundary (so "classifier" would also wrap e.g. "xclassifier")."""
    return any(key.endswith(m) for m in modules_to_save or [])


def get_pattern_key(pattern_keys, key_to_match):
    """utils/other.py get_pattern_key: the FIRST pattern key (dict order) for which
    re.match(rf"(.*\\.)?({key})$", key_to_match) succeeds, else key_to_match itself
    (which no pattern dict holds, so the default r / lora_alpha applies).
    - the key is a regex (its dots are wildcards), anchored at the END of the module
      name and preceded by either nothing or anything ending in a dot: "o_proj"
      matches "model.layers.0.self_attn.o_proj" but not "...self_attn.xo_proj";
      the full path "model.layers.1.mlp.down_proj" matches exactly that module (the
      optional group may be empty).
    - current_key is the module name inside the transformers model (no
      "base_model.model." prefix; LoraModel._create_and_replace receives
      BaseTuner.inject_adapter's key over self.model.named_modules()).
    - rank_pattern and alpha_pattern are resolved independently (lora/model.py
      LoraModel._create_and_replace: r_key = get_pattern_key(rank_pattern.keys(), ..),
      alpha_key = get_pattern_key(alpha_pattern.keys(), ..)).
    NOTE: older PEFT (lora/model.py before get_pattern_key existed) used
    re.match(rf".*\\.{key}$", current_key) over rank_pattern+alpha_pattern keys
    together; that regex needs a dot BEFORE the key, so a full-path key such as
    "model.layers.1.mlp.down_proj" did not match there.  The fixtures follow the
    current get_pattern_key (the saved lora_A/lora_B shapes also pin r=2)."""
    for key in pattern_keys:
        if re.match(rf"(.*\.)?({key})$", key_to_match):
            return key
    return key_to_match


def resolve_r_alpha(cfg, module):
    r = cfg.get("rank_pattern", {}).get(get_pattern_key(cfg.get("rank_pattern", {}).keys(), module), cfg["r"])
    alpha = cfg.get("alpha_pattern", {}).get(get_pattern_key(cfg.get("alpha_pattern", {}).keys(), module),
                                             cfg["lora_alpha"])
    return r, alpha


def lora_scaling(r, alpha, use_rslora):
    """lora/layer.py LoraLayer.update_layer: alpha / sqrt(r) with use_rslora, else alpha / r."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def transpose(w, fan_in_fan_out):  # utils/other.py transpose
    return w.t() if fan_in_fan_out else w


def dora_weight_norm(w_base, lora_weight, scaling, fan_in_fan_out):
    """lora/dora.py DoraLinearLayer.get_weight_norm: W = transpose(W, fan_in_fan_out)
    ([out, in]); W + scaling * (B @ A); torch.linalg.norm(dim=1) -> one L2 norm per
    OUTPUT row, taken over the input dim.  (In forward the result is .detach()ed: a
    gradient-only matter, the value is the same.)"""
    w = transpose(w_base, fan_in_fan_out) + scaling * lora_weight
    return torch.linalg.norm(w, dim=1)


class Adapter:
    """One LoRA layer as PEFT holds it (lora/layer.py Linear)."""

    def __init__(self, module, A, B, scaling, fan_in_fan_out, magnitude=None):
        self.module, self.A, self.B, self.scaling = module, A, B, scaling
        self.fan_in_fan_out, self.magnitude = fan_in_fan_out, magnitude

    def delta_weight(self):
        """lora/layer.py Linear.get_delta_weight: transpose(B @ A, fan_in_fan_out) * scaling
        (shape of the base weight: [out, in] for nn.Linear, [in, out] for Conv1D)."""
        return transpose(self.B @ self.A, self.fan_in_fan_out) * self.scaling

    def merged_weight(self, w):
        """lora/layer.py Linear.merge (safe_merge=False path).
        LoRA: W + delta.
        DoRA: weight_norm = get_weight_norm(W, transpose(delta, fifo), scaling=1);
              dora_factor = transpose((magnitude / weight_norm).view(-1, 1), fifo);
              W' = dora_factor * (W + delta)   i.e. per output row  m * (W+sBA) / ||W+sBA||."""
        delta = self.delta_weight()
        if self.magnitude is None:
            return w + delta
        norm = dora_weight_norm(w, transpose(delta, self.fan_in_fan_out), 1.0, self.fan_in_fan_out)
        factor = transpose((self.magnitude / norm).view(-1, 1), self.fan_in_fan_out)
        return factor * (w + delta)

    def extra_output(self, x, w):
        """What lora/layer.py Linear.forward adds to base_layer(x) (dropout = identity).
        LoRA: lora_B(lora_A(x)) * scaling.
        DoRA (lora/dora.py DoraLinearLayer.forward): lora_weight = B @ A;
              weight_norm = get_weight_norm(W, lora_weight, scaling).detach();
              mag_norm_scale = (magnitude / weight_norm).view(1, -1);
              (mag_norm_scale - 1) * F.linear(x, transpose(W, fifo))   [no bias]
              + mag_norm_scale * lora_B(lora_A(x)) * scaling."""
        lora = (x @ self.A.t()) @ self.B.t()
        if self.magnitude is None:
            return lora * self.scaling
        w_oi = transpose(w, self.fan_in_fan_out)
        norm = dora_weight_norm(w, self.B @ self.A, self.scaling, self.fan_in_fan_out).detach()
        mns = (self.magnitude / norm).view(1, -1)
        return (mns - 1) * (x @ w_oi.t()) + mns * lora * self.scaling


# ----------------------------------------------------------------------------
# loading an adapter from disk, as a PEFT-compatible loader must
# ----------------------------------------------------------------------------

def base_linear_modules(base_sd, model_type):
    """Module names of the base model's Linear / Conv1D layers (2-D `.weight`, not an
    embedding).  GPT-2's transformer blocks use transformers' Conv1D (weight [in, out])."""
    out = {}
    for k, v in base_sd.items():
        if not k.endswith(".weight") or v.dim() != 2:
            continue
        m = k[: -len(".weight")]
        leaf = m.split(".")[-1]
        if leaf in ("wte", "wpe", "embed_tokens") or leaf.endswith("_embeddings"):
            continue
        out[m] = "Conv1D" if (model_type == "gpt2" and ".h." in "." + m) else "Linear"
    return out


def load_adapter(adapter_dir, base_sd, model_type):
    """Returns (adapters {module: Adapter}, sd with modules_to_save weights swapped in)."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA"
    tensors = hf.load_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    for k in tensors:
        assert k.startswith(PREFIX), k
    t = {k[len(PREFIX):]: v for k, v in tensors.items()}

    linear = base_linear_modules(base_sd, model_type)
    targeted = sorted(m for m in linear if target_module_matches(m, cfg["target_modules"])
                      and not modules_to_save_matches(m, cfg.get("modules_to_save")))
    adapters = {}
    for m in targeted:
        r, alpha = resolve_r_alpha(cfg, m)
        # lora/layer.py dispatch_default: a Conv1D target forces fan_in_fan_out=True,
        # an nn.Linear target forces it False, whatever the config says.
        fifo = linear[m] == "Conv1D"
        assert fifo == bool(cfg["fan_in_fan_out"]), (m, cfg["fan_in_fan_out"])
        A, B = t.pop(m + ".lora_A.weight"), t.pop(m + ".lora_B.weight")
        w = base_sd[m + ".weight"]
        n_in, n_out = (w.shape[0], w.shape[1]) if fifo else (w.shape[1], w.shape[0])
        assert A.shape == (r, n_in) and B.shape == (n_out, r), (m, A.shape, B.shape, r)
        mag = None
        if cfg.get("use_dora"):
            # utils/save_and_load.py get_peft_model_state_dict: DoRA's
            # "lora_magnitude_vector.<adapter>.weight" is saved with ".weight" stripped and
            # the adapter name removed -> "<module>.lora_magnitude_vector".
            mag = t.pop(m + ".lora_magnitude_vector")
            assert mag.shape == (n_out,)
        adapters[m] = Adapter(m, A, B, lora_scaling(r, alpha, cfg["use_rslora"]), fifo, mag)
    sd = dict(base_sd)
    for k in list(t):
        # modules_to_save: ModulesToSaveWrapper.adapter_state_dict -> "<module>.<param>"
        mod = k.rsplit(".", 1)[0]
        assert modules_to_save_matches(mod, cfg.get("modules_to_save")) and k in base_sd, k
        assert t[k].shape == base_sd[k].shape
        sd[k] = t.pop(k)
    assert not t, f"unused adapter tensors {sorted(t)}"
    return cfg, adapters, sd


def merged_state_dict(sd, adapters):
    out = dict(sd)
    for m, a in adapters.items():
        out[m + ".weight"] = a.merged_weight(sd[m + ".weight"])
    return out


@contextlib.contextmanager
def unmerged(sd, adapters):
    """Run make_hf_fixtures' forwards with PEFT's unmerged layer forward: every
    `linear(x, w, b)` / `conv1d(x, w, b)` whose weight IS a targeted module's tensor
    gets base_layer(x) + the adapter's extra output.  Yields a hit counter."""
    by_id = {id(sd[m + ".weight"]): a for m, a in adapters.items()}
    orig_linear, orig_conv1d = hf.linear, hf.conv1d
    hits = collections.Counter()

    def lin(x, w, b=None):
        y = orig_linear(x, w, b)
        a = by_id.get(id(w))
        if a is not None:
            assert not a.fan_in_fan_out
            hits[a.module] += 1
            y = y + a.extra_output(x, w)
        return y

    def c1d(x, w, b):
        y = orig_conv1d(x, w, b)
        a = by_id.get(id(w))
        if a is not None:
            assert a.fan_in_fan_out
            hits[a.module] += 1
            y = y + a.extra_output(x, w)
        return y

    hf.linear, hf.conv1d = lin, c1d
    try:
        yield hits
    finally:
        hf.linear, hf.conv1d = orig_linear, orig_conv1d


# ----------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------

def peft_config(**over):
    """adapter_config.json as LoraConfig.save_pretrained writes it (to_dict, sorted keys,
    inference_mode true).  Fields of a recent LoraConfig (lora/config.py)."""
    c = {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": None,
        "bias": "none",
        "corda_config": None,
        "eva_config": None,
        "exclude_modules": None,
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": 8,
        "lora_bias": False,
        "lora_dropout": 0.0,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": 8,
        "rank_pattern": {},
        "revision": None,
        "target_modules": None,
        "task_type": "CAUSAL_LM",
        "trainable_token_indices": None,
        "use_dora": False,
        "use_rslora": False,
    }
    for k in over:
        assert k in c, k
    c.update(over)
    return c


# name, base case, forward, kind, config, A std, B std, seed
CASES = [
    ("gpt2-lora", "gpt2", hf.gpt2_forward, "causal",
     peft_config(base_model_name_or_path="hf-ref/gpt2", r=4, lora_alpha=8,
                 target_modules=["c_attn", "c_proj"], fan_in_fan_out=True),
     0.2, 0.15, 1),
    ("llama-lora-rslora-pattern", "llama", hf.llama_forward, "causal",
     peft_config(base_model_name_or_path="hf-ref/llama", r=4, lora_alpha=16, use_rslora=True,
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                 rank_pattern={"model.layers.1.mlp.down_proj": 2}, alpha_pattern={"o_proj": 4}),
     0.1, 0.06, 2),
    ("llama-dora", "llama", hf.llama_forward, "causal",
     peft_config(base_model_name_or_path="hf-ref/llama", r=2, lora_alpha=4, use_dora=True,
                 target_modules=["q_proj", "v_proj"]),
     0.2, 0.2, 3),
    ("bert-seqcls-lora", "bert-seqcls", hf.bert_forward, "seqcls",
     peft_config(base_model_name_or_path="hf-ref/bert-seqcls", r=4, lora_alpha=8, task_type="SEQ_CLS",
                 target_modules=["query", "value"], modules_to_save=["classifier"]),
     0.2, 0.15, 4),
]

EXPECTED_TARGETS = {  # what the suffix matching must hit (checked, not used to build)
    "gpt2-lora": [f"transformer.h.{i}.{n}" for i in range(2) for n in ("attn.c_attn", "attn.c_proj", "mlp.c_proj")],
    "llama-lora-rslora-pattern": [f"model.layers.{i}.{n}" for i in range(2) for n in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")],
    "llama-dora": [f"model.layers.{i}.self_attn.{n}" for i in range(2) for n in ("q_proj", "v_proj")],
    "bert-seqcls-lora": [f"bert.encoder.layer.{i}.attention.self.{n}" for i in range(2) for n in ("query", "value")],
}


def build_adapter_tensors(cfg, base_sd, model_type, a_std, b_std):
    """Random A, B (B NON-zero, unlike init_lora_weights=True, so the adapter does
    something), DoRA magnitudes and modules_to_save weights, with PEFT's saved key names
    (utils/save_and_load.py get_peft_model_state_dict: "lora_" keys, ".<adapter>" removed)."""
    linear = base_linear_modules(base_sd, model_type)
    out = {}
    for m in sorted(m for m in linear if target_module_matches(m, cfg["target_modules"])):
        r, alpha = resolve_r_alpha(cfg, m)
        w = base_sd[m + ".weight"]
        fifo = linear[m] == "Conv1D"
        n_in, n_out = (w.shape[0], w.shape[1]) if fifo else (w.shape[1], w.shape[0])
        A = torch.randn(r, n_in) * a_std
        B = torch.randn(n_out, r) * b_std
        out[PREFIX + m + ".lora_A.weight"] = A
        out[PREFIX + m + ".lora_B.weight"] = B
        if cfg["use_dora"]:
            # PEFT initialises the magnitude to ||W + s*B@A|| per row (dora.py update_layer);
            # use a random multiple of it so that the magnitude actually matters.
            s = lora_scaling(r, alpha, cfg["use_rslora"])
            init = dora_weight_norm(w, B @ A, s, fifo)
            out[PREFIX + m + ".lora_magnitude_vector"] = init * (0.6 + 0.8 * torch.rand(n_out))
    for mod in cfg.get("modules_to_save") or []:
        for k in sorted(base_sd):
            if k.rsplit(".", 1)[0].endswith(mod):
                # utils/other.py ModulesToSaveWrapper.adapter_state_dict + save_and_load.py:
                # "<wrapper module>.<param>" -> base_model.model.classifier.weight / .bias
                v = base_sd[k]
                out[PREFIX + k] = torch.randn(*v.shape) * (0.5 if v.dim() == 2 else 0.2)
    return out


def causal_logprobs(fwd, sd, cfg, ids):
    t = ids.shape[1]
    logits = fwd(sd, cfg, ids, torch.ones(1, t, dtype=torch.int64), torch.arange(t)[None])["logits"][0]
    lp = torch.log_softmax(logits, dim=-1)
    return torch.stack([lp[i, ids[0, i + 1]] for i in range(t - 1)]), logits


def run_outputs(name, fwd, kind, base_cfg, sd, ex):
    """The case's output vector: logprobs (causal) or class logits (seqcls), row 0."""
    if kind == "causal":
        return causal_logprobs(fwd, sd, base_cfg, ex["ids"])[0]
    return fwd(sd, base_cfg, ex["ids"], ex["mask"], ex["tt"])["logits"][0]


def to_double(sd):
    return {k: (v.double() if v.dtype == torch.float32 else v) for k, v in sd.items()}


def self_checks():
    """The matching rules on names the fixtures do not exercise by themselves."""
    assert get_pattern_key(["o_proj"], "model.layers.0.self_attn.o_proj") == "o_proj"
    assert get_pattern_key(["o_proj"], "model.layers.0.self_attn.xo_proj") == "model.layers.0.self_attn.xo_proj"
    assert get_pattern_key(["o_proj"], "o_proj") == "o_proj"  # optional prefix group
    full = "model.layers.1.mlp.down_proj"
    assert get_pattern_key([full], full) == full
    assert get_pattern_key([full], "model.layers.0.mlp.down_proj") != full
    assert get_pattern_key([full], "base_model.model." + full) == full  # also with the saved prefix
    assert get_pattern_key(["a", "o_proj"], "x.o_proj") == "o_proj"  # first match in dict order
    assert not re.match(rf".*\.{full}$", full)  # the older PEFT regex would miss it
    assert target_module_matches("transformer.h.0.mlp.c_proj", ["c_proj"])
    assert not target_module_matches("transformer.h.0.mlp.xc_proj", ["c_proj"])
    assert target_module_matches("c_proj", ["c_proj"])
    assert modules_to_save_matches("xclassifier", ["classifier"])  # no dot boundary
    assert lora_scaling(4, 16, True) == 8.0 and lora_scaling(4, 16, False) == 4.0


def main():
    self_checks()
    os.makedirs(OUT, exist_ok=True)
    summary, sens = [], []
    for name, base, fwd, kind, cfg, a_std, b_std, seed in CASES:
        torch.manual_seed(3000 + seed)
        base_dir = os.path.join(HF_REF, base)
        with open(os.path.join(base_dir, "config.json")) as f:
            base_cfg = json.load(f)
        base_sd = hf.load_safetensors(os.path.join(base_dir, "model.safetensors"))
        base_exp = hf.load_safetensors(os.path.join(base_dir, "expected.safetensors"))
        mt = base_cfg["model_type"]

        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        tensors = build_adapter_tensors(cfg, base_sd, mt, a_std, b_std)
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        hf.save_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors, metadata={"format": "pt"})

        # ---- from here on: only what is on disk ----
        cfg_disk, adapters, sd = load_adapter(d, base_sd, mt)
        back = hf.load_safetensors(os.path.join(d, "adapter_model.safetensors"))
        assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in back)
        assert sorted(adapters) == sorted(EXPECTED_TARGETS[name]), sorted(adapters)

        ex = {"ids": base_exp["input_ids"][:1]}
        if kind == "seqcls":
            ex["mask"] = base_exp["attention_mask"][:1]
            ex["tt"] = base_exp["token_type_ids"][:1]
            assert ex["mask"].all()  # row 0 is the unpadded row

        base_out = run_outputs(name, fwd, kind, base_cfg, base_sd, ex)
        # base reproduces hf-ref's expected (row 0) -> same inputs, same model
        if kind == "causal":
            _, bl = causal_logprobs(fwd, base_sd, base_cfg, ex["ids"])
            err = (bl - base_exp["logits"][0]).abs().max().item()
        else:
            err = (base_out - base_exp["logits"][0]).abs().max().item()
        assert err < 1e-5, (name, "base vs hf-ref expected", err)

        merged_sd = merged_state_dict(sd, adapters)
        merged_out = run_outputs(name, fwd, kind, base_cfg, merged_sd, ex)
        with unmerged(sd, adapters) as hits:
            unmerged_out = run_outputs(name, fwd, kind, base_cfg, sd, ex)
        assert set(hits) == set(adapters) and all(v == 1 for v in hits.values()), hits
        mu = (merged_out - unmerged_out).abs().max().item()
        assert mu < TOL, (name, "merged vs unmerged", mu)
        # float64 run of the same merged math: how much float32 rounding is in the numbers
        merged64 = merged_state_dict(to_double(sd), {m: Adapter(m, a.A.double(), a.B.double(), a.scaling,
                                                              a.fan_in_fan_out,
                                                              None if a.magnitude is None else a.magnitude.double())
                                                     for m, a in adapters.items()})
        out64 = run_outputs(name, fwd, kind, base_cfg, merged64, ex)
        f64 = (merged_out.double() - out64).abs().max().item()

        delta = (merged_out - base_out).abs().max().item()
        assert delta > 0.1, (name, "adapter barely changes the outputs", delta)

        adapted = {m: {"r": a.A.shape[0], "scaling": a.scaling, "fan_in_fan_out": a.fan_in_fan_out}
                   for m, a in sorted(adapters.items())}
        for m in adapted:
            adapted[m]["lora_alpha"] = resolve_r_alpha(cfg_disk, m)[1]
        e = {"base_case": f"hf-ref/{base}", "input_ids": ex["ids"].tolist()}
        if kind == "causal":
            e["merged_logprobs"] = [float(v) for v in merged_out]
            e["merged_nll"] = float(-merged_out.double().mean())
            e["base_logprobs"] = [float(v) for v in base_out]
            e["base_nll"] = float(-base_out.double().mean())
        else:
            e["attention_mask"] = ex["mask"].tolist()
            e["token_type_ids"] = ex["tt"].tolist()
            e["merged_logits"] = [float(v) for v in merged_out]
            e["base_logits"] = [float(v) for v in base_out]
        e["adapted_modules"] = adapted
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(e, f, indent=2)
            f.write("\n")

        sizes = {fn: os.path.getsize(os.path.join(d, fn))
                 for fn in ("adapter_config.json", "adapter_model.safetensors", "expected.json")}
        summary.append((name, kind, len(adapters), sorted(back), delta, mu, f64, sizes))
        sens.extend(sensitivity(name, fwd, kind, base_cfg, sd, adapters, merged_out, ex, cfg_disk))

    total = 0
    print(f"{'case':<28} {'kind':<7} {'layers':>6} {'max|d base->adapter|':>21} {'merged-unmerged':>16} {'f32-f64':>9}  bytes")
    for name, kind, n, keys, delta, mu, f64, sizes in summary:
        total += sum(sizes.values())
        print(f"{name:<28} {kind:<7} {n:>6} {delta:>21.4f} {mu:>16.2e} {f64:>9.2e}  {sum(sizes.values())}")
    print("sensitivity (max |output change| when one PEFT semantic is done wrong):")
    for case, what, v in sens:
        print(f"  {case:<28} {what:<58} {v:.3e}")
    write_readme(summary, sens)
    total += os.path.getsize(os.path.join(OUT, "README.md"))
    print(f"total fixture size: {total} bytes ({total / 1024:.1f} KiB)")
    assert total < 1_000_000


def sensitivity(name, fwd, kind, base_cfg, sd, adapters, merged_out, ex, cfg):
    """Each PEFT decision the case is meant to pin down moves its outputs visibly."""
    rows = []

    def diff(ad, sd_=None):
        out = run_outputs(name, fwd, kind, base_cfg, merged_state_dict(sd_ or sd, ad), ex)
        return (out - merged_out).abs().max().item()

    def with_(pred, **kw):
        res = {}
        for m, a in adapters.items():
            b = Adapter(a.module, a.A, a.B, a.scaling, a.fan_in_fan_out, a.magnitude)
            if pred(m):
                for k, v in kw.items():
                    setattr(b, k, v(a) if callable(v) else v)
            res[m] = b
        return res

    if name == "gpt2-lora":
        rows.append(("mlp.c_proj not adapted (only attn.c_proj)",
                     diff({m: a for m, a in adapters.items() if ".mlp." not in m})))
        # forgetting the fan_in_fan_out transpose only type-checks on square layers
        rows.append(("delta not transposed on square attn.c_proj (fan_in_fan_out)",
                     diff(with_(lambda m: m.endswith("attn.c_proj"), fan_in_fan_out=False))))
    if name == "llama-lora-rslora-pattern":
        rows.append(("scaling alpha/r instead of alpha/sqrt(r) (use_rslora)",
                     diff({m: Adapter(m, a.A, a.B, resolve_r_alpha(cfg, m)[1] / a.A.shape[0], False)
                           for m, a in adapters.items()})))
        rows.append(("alpha_pattern ignored (o_proj alpha 16, not 4)",
                     diff(with_(lambda m: m.endswith("o_proj"), scaling=lambda a: 16 / math.sqrt(4)))))
        rows.append(("down_proj L1 scaling from r=4 not r=2 (rank_pattern)",
                     diff(with_(lambda m: m == "model.layers.1.mlp.down_proj", scaling=16 / math.sqrt(4)))))
    if name == "llama-dora":
        rows.append(("magnitude ignored (plain LoRA merge)", diff(with_(lambda m: True, magnitude=None))))
        # norm of W alone (without s*B@A): same dims, wrong value
        bad = {}
        for m, a in adapters.items():
            w = sd[m + ".weight"]
            f = a.magnitude / torch.linalg.norm(w, dim=1)
            bad[m] = f.view(-1, 1) * (w + a.delta_weight())
        rows.append(("DoRA norm of W only (without scaling*B@A)",
                     (run_outputs(name, fwd, kind, base_cfg, {**sd, **{m + ".weight": v for m, v in bad.items()}}, ex)
                      - merged_out).abs().max().item()))
        bad = {}
        for m, a in adapters.items():
            if not m.endswith("q_proj"):
                continue  # square layer: a column norm has the right length
            w = sd[m + ".weight"]
            wd = w + a.delta_weight()
            bad[m] = (a.magnitude / torch.linalg.norm(wd, dim=0)).view(-1, 1) * wd
        rows.append(("DoRA norm per input column on q_proj (dim=0 not dim=1)",
                     (run_outputs(name, fwd, kind, base_cfg, merged_state_dict(
                         {**sd, **{m + ".weight": v for m, v in bad.items()}},
                         {m: a for m, a in adapters.items() if m not in bad}), ex) - merged_out).abs().max().item()))
    if name == "bert-seqcls-lora":
        base_sd = hf.load_safetensors(os.path.join(HF_REF, "bert-seqcls", "model.safetensors"))
        sd_old_cls = dict(sd)
        for k in ("classifier.weight", "classifier.bias"):
            sd_old_cls[k] = base_sd[k]
        rows.append(("classifier from base, not modules_to_save", diff(adapters, sd_old_cls)))
        rows.append(("LoRA on query/value ignored", diff({})))
    return [(name, w, v) for w, v in rows]


def write_readme(summary, sens):
    lines = [README_HEAD]
    lines.append("| case | base | what | adapted layers | saved keys | max abs change vs base |")
    lines.append("|---|---|---|---|---|---|")
    what = {
        "gpt2-lora": "LoRA r=4 alpha=8 on Conv1D `c_attn`+`c_proj` (attn AND mlp), fan_in_fan_out",
        "llama-lora-rslora-pattern": "rsLoRA r=4 alpha=16 on all 7 projections; rank_pattern `model.layers.1.mlp.down_proj`: 2; alpha_pattern `o_proj`: 4",
        "llama-dora": "DoRA r=2 alpha=4 on `q_proj`,`v_proj`, random magnitudes",
        "bert-seqcls-lora": "LoRA r=4 alpha=8 on `query`,`value`; modules_to_save `classifier` (random new head)",
    }
    base = {c[0]: c[1] for c in CASES}
    for name, kind, n, keys, delta, mu, f64, sizes in summary:
        short = sorted({re.sub(r"\.\d+\.", ".{i}.", k) for k in keys})
        unit = "logprob" if kind == "causal" else "logit"
        lines.append(f"| `{name}` | `hf-ref/{base[name]}` | {what[name]} | {n} | "
                     + "<br>".join(f"`{k}`" for k in short) + f" | {delta:.3f} ({unit}) |")
    lines.append("")
    lines.append("Sensitivity (max abs change of the case's outputs when one semantic is done wrong;"
                 " printed by the script):")
    lines.append("")
    for case, w, v in sens:
        lines.append(f"- `{case}`: {w}: {v:.3g}")
    lines.append("")
    lines.append(README_SEMANTICS)
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("\n".join(lines))


README_HEAD = """# PEFT (LoRA / rsLoRA / DoRA) reference fixtures

Made by `scripts/make_peft_fixtures.py`: an independent plain-torch (float32, CPU)
reference with no `peft` or `transformers` package. It reads the tiny base
checkpoints in `test/fixtures/hf-ref/` and reuses the forward functions and the
safetensors reader/writer of `scripts/make_hf_fixtures.py` (imported as a
module). PEFT's file format and math were read from huggingface/peft's source;
every decision is listed below with the file/function it comes from.

Regenerate (from the repository root; deterministic, `torch.manual_seed` per case;
needs the hf-ref fixtures, which it only reads):

    /usr/bin/python3 scripts/make_peft_fixtures.py

Each `<case>/` holds:

- `adapter_config.json`: a LoraConfig as `save_pretrained` writes it (sorted keys,
  `inference_mode: true`). `base_model_name_or_path` is `hf-ref/<base>`, relative
  to `test/fixtures/`.
- `adapter_model.safetensors`: float32, metadata `{"format": "pt"}`, PEFT's saved
  key names: `base_model.model.<module>.lora_A.weight` [r, in] and
  `.lora_B.weight` [out, r] (no adapter name), DoRA
  `base_model.model.<module>.lora_magnitude_vector` [out], modules_to_save
  `base_model.model.classifier.weight` / `.bias`. lora_B is random and NON-zero
  (PEFT's default init makes B = 0, which would test nothing); DoRA magnitudes are
  random multiples (0.6..1.4) of their init value ||W + s*B@A||.
- `expected.json`: `input_ids` [[7 ids]] = row 0 of the base case's expected
  inputs (unpadded). Causal LMs: `merged_logprobs[i] = log p(ids[i+1] | ids[:i+1])`
  (6 values), `merged_nll` = mean of -logprobs, `base_logprobs` / `base_nll`
  without the adapter. `bert-seqcls-lora`: also `attention_mask` (all 1) and
  `token_type_ids` (row 0 of hf-ref/bert-seqcls: `[0,0,0,0,1,1,1]`, pass them),
  `merged_logits` [3] and `base_logits` [3]. `adapted_modules` lists each adapted
  module with its resolved `r`, `lora_alpha`, `scaling`, `fan_in_fan_out`.

The generator computes everything from the files as written (re-reading and
re-resolving the adapter like a loader would), once with the adapter MERGED into
the weights and once UNMERGED (PEFT's layer forward in every targeted layer), and
asserts they agree to 1e-5; it also asserts its base outputs equal hf-ref's
expected logits for row 0 to 1e-5. A float32 implementation should match to
about 1e-4 absolute.
"""

README_SEMANTICS = """## PEFT semantics used (huggingface/peft, src/peft/...)

- **Which modules are adapted** - `tuners/tuners_utils.py` `check_target_module_exists`
  (list form): module name == target, or ends with `"." + target`. So GPT-2's
  `c_proj` adapts both `h.{i}.attn.c_proj` and `h.{i}.mlp.c_proj`; `query` adapts
  `bert.encoder.layer.{i}.attention.self.query`. Module names are relative to the
  transformers model (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`),
  and the saved key is `base_model.model.` + that name.
- **Scaling** - `tuners/lora/layer.py` `LoraLayer.update_layer`: `lora_alpha / r`;
  with `use_rslora` (**rsLoRA**) `lora_alpha / math.sqrt(r)`.
- **rank_pattern / alpha_pattern** - `tuners/lora/model.py` `LoraModel._create_and_replace`
  resolves r and alpha independently with `utils/other.py` `get_pattern_key(pattern_keys,
  current_key)`: the FIRST key (dict order) for which
  `re.match(rf"(.*\\.)?({key})$", current_key)` matches, else the default `r` /
  `lora_alpha`. The key is a regex (dots are wildcards) anchored at the end of the
  module name and preceded by nothing or by something ending in `.`: `o_proj` hits
  every `...self_attn.o_proj` (alpha 4 -> scaling 4/sqrt(4) = 2 here), and the full
  path `model.layers.1.mlp.down_proj` hits exactly that module (r 2 -> scaling
  16/sqrt(2)); everything else: r 4, alpha 16, scaling 8. Older PEFT matched
  `re.match(rf".*\\.{key}$", current_key)` over both dicts' keys together, which needs
  a dot before the key and so would NOT have matched that full-path key; the saved
  lora_A [2, 64] / lora_B [32, 2] shapes pin r=2 in any case.
- **fan_in_fan_out** - `tuners/lora/layer.py` `dispatch_default`: a transformers
  `Conv1D` target (GPT-2, weight [in, out]) forces `fan_in_fan_out = True` (an
  `nn.Linear` forces False). `LoraLayer.__init__` takes `in_features, out_features =
  weight.shape` for Conv1D, so lora_A is still [r, in] and lora_B [out, r];
  `Linear.get_delta_weight` = `transpose(B @ A, fan_in_fan_out) * scaling`
  (`utils/other.py` `transpose`), i.e. `(B@A).T * s` added to the [in, out] weight.
- **Merge** - `tuners/lora/layer.py` `Linear.merge`: LoRA `W += delta`; DoRA
  `weight_norm = get_weight_norm(W, transpose(delta, fifo), scaling=1)`,
  `W' = (magnitude / weight_norm)[:, None] * (W + delta)` (transposed back for fifo).
- **Unmerged forward** - `tuners/lora/layer.py` `Linear.forward`:
  `base_layer(x) + lora_B(lora_A(dropout(x))) * scaling` (dropout 0 -> identity).
  DoRA: `tuners/lora/dora.py` `DoraLinearLayer.forward`: `lora_weight = B @ A`,
  `weight_norm = get_weight_norm(W, lora_weight.detach(), scaling).detach()`,
  `mag_norm_scale = magnitude / weight_norm`, result +=
  `(mag_norm_scale - 1) * F.linear(x, transpose(W, fifo))` (no bias) +
  `mag_norm_scale * lora_B(lora_A(x)) * scaling`. Equal to the merge above.
- **DoRA norm** - `tuners/lora/dora.py` `DoraLinearLayer.get_weight_norm`:
  `torch.linalg.norm(transpose(W, fifo) + scaling * lora_weight, dim=1)`: one L2
  norm per OUTPUT row, over the input dim, of the adapted weight (W + s*B@A, not W).
  The `.detach()` only stops gradients; it does not change values. Magnitude init
  (not used for these random magnitudes) is that norm (`DoraLinearLayer.update_layer`).
- **DoRA key** - `utils/save_and_load.py` `get_peft_model_state_dict`: the in-memory
  `lora_magnitude_vector.<adapter>.weight` is saved with `.weight` stripped, then the
  adapter name removed -> `<module>.lora_magnitude_vector` (no `.weight`).
  `set_peft_model_state_dict` re-appends `.weight` when loading.
- **Adapter name** - `utils/save_and_load.py` `get_peft_model_state_dict` ends with
  `k.replace(".default", "")`: saved keys carry no adapter name. With `bias: "none"`
  only keys containing `lora_` (plus modules_to_save) are saved.
- **modules_to_save** - `utils/other.py` `_set_trainable` wraps every module whose
  name `endswith` an entry (no dot boundary) in `ModulesToSaveWrapper`;
  `ModulesToSaveWrapper.adapter_state_dict` returns the copy's own keys (`weight`,
  `bias`) and `get_peft_model_state_dict` prefixes the wrapper's name ->
  `base_model.model.classifier.weight` / `.bias` (the whole module replaces the base
  classifier). Older PEFT reached the same key by taking
  `<module>.modules_to_save.<adapter>.<param>` and deleting `modules_to_save.` and
  `.<adapter>`; the original (frozen) classifier is never saved.
  `tuners_utils.py` `check_target_module_exists` (recent) never puts LoRA on a
  modules_to_save module. Note: `peft_model.py` `PeftModelForSequenceClassification`
  extends `modules_to_save` with `["classifier", "score"]`, so a real SEQ_CLS
  adapter_config.json written by PEFT usually says `["classifier", "classifier",
  "score"]`; this fixture keeps the plain `["classifier"]`.
"""


if __name__ == "__main__":
    main()
