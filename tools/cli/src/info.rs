//! `tessera info MODEL [--json] [-c N]`: what is inside a GGUF file — metadata, hyper-parameters,
//! tokenizer summary, tensors, totals per type — and the KV cache its hyper-parameters imply,
//! per token, at a context length, beside the multi-head equivalent and per layer, so GQA/MQA and
//! sliding windows show in numbers. Only the header is read, never tensor data.
//! `tessera info --devices` lists the compute devices instead: the CPU and every GPU adapter
//! wgpu finds, with the limits and optional features the GPU backend uses.
//! `tessera info --architectures` lists the model architectures Tessera runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use clap::Args;
use serde_json::{Map, Value, json};
use tessera_engine::GgufFile;
use tessera_engine::gguf::{MetaArray, MetaValue, Metadata, TensorInfo};
use tessera_models::HParams;
use tessera_models::hparams::RopeScalingType;

use crate::CliResult;
use crate::units::bytes_h;

/// Arrays longer than this are summarised (type and length) instead of listed.
const MAX_LISTED_ARRAY: usize = 16;
/// Bytes per KV element: the cache is F16.
const KV_ELEM_BYTES: usize = 2;

/// Arguments of `tessera info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A GGUF file, or a registry name (pulled on first use).
    #[arg(required_unless_present_any = ["devices", "architectures"])]
    model: Option<String>,
    /// List the compute devices (CPU and GPU adapters) instead of describing a model.
    #[arg(long)]
    devices: bool,
    /// List the supported architectures (`general.architecture` values) instead.
    #[arg(long, conflicts_with = "devices")]
    architectures: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Context length for the KV-cache figures.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    ctx: u32,
    /// Tokens per step (as `run`'s -b): sliding-window layers' rings keep this many cells
    /// beyond their window.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    batch_size: u32,
    #[command(flatten)]
    load: crate::common::LoadArgs,
}

/// Run `tessera info`.
pub fn run(args: InfoArgs) -> CliResult {
    let out = match (&args.model, args.devices) {
        _ if args.architectures => architectures_report(args.json),
        (Some(model), false) => {
            let path = tessera_registry::resolve_model(model)?;
            let file = GgufFile::open_with(&path, !args.load.no_mmap)?;
            let report = Report::new(&path, &file, args.ctx as usize, args.batch_size as usize);
            if args.json {
                serde_json::to_string_pretty(&report.to_json())? + "\n"
            } else {
                report.to_text()
            }
        }
        _ => devices_report(args.json)?,
    };
    // A closed pipe (`tessera info x | head`) is not an error worth a message.
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// The supported architectures with the families they run, as text or JSON.
fn architectures_report(as_json: bool) -> String {
    let archs = tessera_models::arch::ARCHITECTURES;
    if as_json {
        let list: Vec<Value> = archs
            .iter()
            .map(|a| json!({"architecture": a.name, "families": a.families}))
            .collect();
        return serde_json::to_string_pretty(&list).unwrap_or_default() + "\n";
    }
    let mut s = String::new();
    for a in archs {
        let _ = writeln!(s, "{:<10} {}", a.name, a.families);
    }
    s
}

/// The CPU and every GPU adapter, as text or JSON.
fn devices_report(as_json: bool) -> CliResult<String> {
    let isa = crate::run::isa_name(tessera_engine::cpu::dot::detected_isa());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gpus = tessera_engine::backend::list_gpus();
    if as_json {
        let list: Vec<Value> = gpus
            .iter()
            .map(|a| {
                json!({
                    "index": a.index,
                    "name": a.name,
                    "backend": a.backend,
                    "type": a.device_type,
                    "driver": a.driver,
                    "max_storage_binding_bytes": a.max_storage_binding,
                    "max_buffer_bytes": a.max_buffer,
                    "max_workgroup_storage_bytes": a.max_workgroup_storage,
                    "max_invocations_per_workgroup": a.max_invocations,
                    "shader_f16": a.shader_f16,
                    "subgroups": a.subgroups,
                    "subgroup_size_min": a.subgroup_size.0,
                    "subgroup_size_max": a.subgroup_size.1,
                })
            })
            .collect();
        let v = json!({"cpu": {"isa": isa, "cores": cores}, "gpus": list});
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let mut s = String::new();
    writeln!(s, "cpu: {isa}, {cores} cores (--device cpu)")?;
    if !cfg!(feature = "gpu") {
        writeln!(
            s,
            "gpu: this build has no GPU backend (built without the `gpu` cargo feature)"
        )?;
    } else if gpus.is_empty() {
        writeln!(
            s,
            "gpu: none found (wgpu saw no Vulkan, Metal or DX12 adapter; on Linux, \
             `apt-get install mesa-vulkan-drivers` gives a software one)"
        )?;
    }
    for a in &gpus {
        writeln!(
            s,
            "gpu {}: {} ({}, {}; driver {}) (--device gpu --gpu-index {})",
            a.index, a.name, a.backend, a.device_type, a.driver, a.index
        )?;
        writeln!(
            s,
            "    max storage binding {} MiB, max buffer {} MiB, workgroup memory {} KiB, \
             {} invocations per workgroup",
            a.max_storage_binding >> 20,
            a.max_buffer >> 20,
            a.max_workgroup_storage >> 10,
            a.max_invocations
        )?;
        writeln!(
            s,
            "    shader-f16 {}, subgroups {} (size {}..{})",
            yes_no(a.shader_f16),
            yes_no(a.subgroups),
            a.subgroup_size.0,
            a.subgroup_size.1
        )?;
    }
    Ok(s)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Count and bytes of the tensors of one type.
#[derive(Default, Clone, Copy)]
struct DTypeTotal {
    count: usize,
    bytes: u64,
}

/// Summary of the tokenizer keys.
struct TokenizerSummary {
    model: Option<String>,
    pre: Option<String>,
    vocab_size: Option<usize>,
    bos: Option<(u32, Option<String>)>,
    eos: Option<(u32, Option<String>)>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    chat_template_chars: Option<usize>,
}

impl TokenizerSummary {
    fn new(meta: &Metadata) -> Self {
        let tokens = meta.str_array("tokenizer.ggml.tokens").ok();
        let special = |key: &str| {
            meta.opt_u32(key).ok().flatten().map(|id| {
                let text = tokens.and_then(|t| t.get(id as usize)).cloned();
                (id, text)
            })
        };
        TokenizerSummary {
            model: meta
                .opt_str("tokenizer.ggml.model")
                .ok()
                .flatten()
                .map(Into::into),
            pre: meta
                .opt_str("tokenizer.ggml.pre")
                .ok()
                .flatten()
                .map(Into::into),
            vocab_size: tokens.map(|t| t.len()),
            bos: special("tokenizer.ggml.bos_token_id"),
            eos: special("tokenizer.ggml.eos_token_id"),
            add_bos: meta.opt_bool("tokenizer.ggml.add_bos_token").ok().flatten(),
            add_eos: meta.opt_bool("tokenizer.ggml.add_eos_token").ok().flatten(),
            chat_template_chars: meta
                .opt_str("tokenizer.chat_template")
                .ok()
                .flatten()
                .map(|t| t.chars().count()),
        }
    }

    fn to_json(&self) -> Value {
        let special = |s: &Option<(u32, Option<String>)>| match s {
            Some((id, text)) => (json!(id), json!(text)),
            None => (Value::Null, Value::Null),
        };
        let (bos_id, bos) = special(&self.bos);
        let (eos_id, eos) = special(&self.eos);
        json!({
            "model": self.model,
            "pre": self.pre,
            "vocab_size": self.vocab_size,
            "bos_token_id": bos_id,
            "bos_token": bos,
            "eos_token_id": eos_id,
            "eos_token": eos,
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
            "has_chat_template": self.chat_template_chars.is_some(),
        })
    }
}

/// KV-cache figures of one layer.
struct LayerKv {
    local: bool,
    window: Option<u32>,
    rope_base: f32,
    cells: usize,
    bytes: usize,
    bytes_mha: usize,
}

/// KV-cache figures of the whole model at one context length.
struct KvSummary {
    n_ctx: usize,
    per_token: usize,
    per_token_mha: usize,
    /// Per token once the context is longer than every window (only global layers grow).
    per_token_beyond_window: usize,
    total: usize,
    total_mha: usize,
    /// Total if every layer attended globally (shows what the sliding window saves).
    total_full_attention: usize,
    layers: Vec<LayerKv>,
}

impl KvSummary {
    /// The figures at context `n_ctx`, rings keeping `n_batch` cells beyond their window.
    fn new(h: &HParams, n_ctx: usize, n_batch: usize) -> Self {
        let cell = h.kv_cell_bytes(h.n_head_kv, KV_ELEM_BYTES);
        let cell_mha = h.kv_cell_bytes_equivalent(h.n_head, KV_ELEM_BYTES);
        let layers: Vec<LayerKv> = (0..h.n_layer)
            .map(|il| {
                let a = h.layer_attention(il);
                let cells = h.kv_cells(il, n_ctx, n_batch);
                LayerKv {
                    local: a.window.is_some(),
                    window: a.window,
                    rope_base: a.rope_base,
                    cells,
                    bytes: cells * cell,
                    bytes_mha: cells * cell_mha,
                }
            })
            .collect();
        let n_global = layers.iter().filter(|l| !l.local).count();
        KvSummary {
            n_ctx,
            per_token: h.n_layer * cell,
            per_token_mha: h.n_layer * cell_mha,
            per_token_beyond_window: n_global * cell,
            total: layers.iter().map(|l| l.bytes).sum(),
            total_mha: layers.iter().map(|l| l.bytes_mha).sum(),
            total_full_attention: h.n_layer * n_ctx * cell,
            layers,
        }
    }

    fn to_json(&self, h: &HParams) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .enumerate()
            .map(|(il, l)| {
                json!({
                    "layer": il,
                    "attention": if l.local { "local" } else { "global" },
                    "window": l.window,
                    "rope_base": f32_json(l.rope_base),
                    "cells": l.cells,
                    "bytes": l.bytes,
                    "bytes_mha": l.bytes_mha,
                })
            })
            .collect();
        json!({
            "dtype": "F16",
            "n_ctx": self.n_ctx,
            "n_head_kv": h.n_head_kv,
            "n_head": h.n_head,
            "bytes_per_token": self.per_token,
            "bytes_per_token_mha": self.per_token_mha,
            "bytes_per_token_beyond_window": self.per_token_beyond_window,
            "bytes_at_n_ctx": self.total,
            "bytes_at_n_ctx_mha": self.total_mha,
            "bytes_at_n_ctx_full_attention": self.total_full_attention,
            "layers": layers,
        })
    }
}

/// Everything `info` shows, gathered once and printed as text or JSON.
struct Report<'a> {
    path: &'a Path,
    file: &'a GgufFile,
    hparams: Result<HParams, String>,
    tokenizer: TokenizerSummary,
    totals: BTreeMap<&'static str, DTypeTotal>,
    kv: Option<KvSummary>,
}

impl<'a> Report<'a> {
    fn new(path: &'a Path, file: &'a GgufFile, n_ctx: usize, n_batch: usize) -> Self {
        let meta = file.metadata();
        let hparams = HParams::as_run(meta).map_err(|e| e.to_string());
        let mut totals: BTreeMap<&'static str, DTypeTotal> = BTreeMap::new();
        for t in file.tensor_infos() {
            let e = totals.entry(t.dtype.name()).or_default();
            e.count += 1;
            e.bytes += t.n_bytes;
        }
        let kv = hparams
            .as_ref()
            .ok()
            .map(|h| KvSummary::new(h, n_ctx, n_batch));
        Report {
            path,
            file,
            hparams,
            tokenizer: TokenizerSummary::new(meta),
            totals,
            kv,
        }
    }

    fn to_json(&self) -> Value {
        let header = self.file.header();
        let metadata: Map<String, Value> = self
            .file
            .metadata()
            .entries()
            .iter()
            .map(|(k, v)| (k.clone(), meta_json(v)))
            .collect();
        let tensors: Vec<Value> = self.file.tensor_infos().iter().map(tensor_json).collect();
        let totals: Map<String, Value> = self
            .totals
            .iter()
            .map(|(k, t)| (k.to_string(), json!({"count": t.count, "bytes": t.bytes})))
            .collect();
        let (hparams, kv) = match (&self.hparams, &self.kv) {
            (Ok(h), Some(kv)) => (hparams_json(h), kv.to_json(h)),
            _ => {
                let e = match &self.hparams {
                    Err(e) => e.clone(),
                    Ok(_) => "unavailable".into(),
                };
                (json!({ "error": e }), json!({ "error": e }))
            }
        };
        json!({
            "file": self.path.display().to_string(),
            "file_size": self.file.file_size(),
            "gguf_version": header.version,
            "alignment": header.alignment,
            "data_offset": header.data_offset,
            "metadata": metadata,
            "hparams": hparams,
            "tokenizer": self.tokenizer.to_json(),
            "tensors": tensors,
            "dtype_totals": totals,
            "tensor_bytes": self.totals.values().map(|t| t.bytes).sum::<u64>(),
            "kv_cache": kv,
        })
    }

    fn to_text(&self) -> String {
        let mut s = String::new();
        let header = self.file.header();
        let meta = self.file.metadata();
        let tensors = self.file.tensor_infos();
        let _ = writeln!(
            s,
            "file: {} ({}, GGUF v{}, {} metadata keys, {} tensors)",
            self.path.display(),
            bytes_h(self.file.file_size()),
            header.version,
            meta.len(),
            tensors.len()
        );

        section(&mut s, "metadata");
        let width = meta
            .entries()
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0);
        for (k, v) in meta.entries() {
            let _ = writeln!(s, "{k:<width$} = {}", meta_text(v));
        }

        section(&mut s, "hyper-parameters");
        match &self.hparams {
            Ok(h) => hparams_text(&mut s, h),
            Err(e) => {
                let _ = writeln!(s, "not available: {e}");
            }
        }

        section(&mut s, "tokenizer");
        let t = &self.tokenizer;
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let special = |v: &Option<(u32, Option<String>)>| match v {
            Some((id, Some(text))) => format!("{id} {text:?}"),
            Some((id, None)) => format!("{id} (out of vocabulary)"),
            None => "-".into(),
        };
        let _ = writeln!(s, "model          {}", opt(&t.model));
        let _ = writeln!(s, "pre-tokenizer  {}", opt(&t.pre));
        let _ = writeln!(
            s,
            "vocab size     {}",
            t.vocab_size.map_or("-".into(), |v| v.to_string())
        );
        let _ = writeln!(s, "bos            {}", special(&t.bos));
        let _ = writeln!(s, "eos            {}", special(&t.eos));
        let flag = |b: Option<bool>| b.map_or("-".into(), |b| b.to_string());
        let _ = writeln!(
            s,
            "add bos/eos    {} / {}",
            flag(t.add_bos),
            flag(t.add_eos)
        );
        let _ = writeln!(
            s,
            "chat template  {}",
            t.chat_template_chars
                .map_or("none".into(), |n| format!("yes ({n} characters)"))
        );

        section(&mut s, "tensors");
        let nw = tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            s,
            "{:<nw$}  {:<7} {:<22} {:>12}",
            "name", "type", "shape", "bytes"
        );
        for t in tensors {
            let _ = writeln!(
                s,
                "{:<nw$}  {:<7} {:<22} {:>12}",
                t.name,
                t.dtype.name(),
                format!("{:?}", t.shape),
                t.n_bytes
            );
        }

        section(&mut s, "totals per type");
        let all: u64 = self.totals.values().map(|t| t.bytes).sum();
        for (name, t) in &self.totals {
            let _ = writeln!(
                s,
                "{name:<7} {:>4} tensors {:>12} bytes  {:>10}  {:5.1}%",
                t.count,
                t.bytes,
                bytes_h(t.bytes),
                100.0 * t.bytes as f64 / all.max(1) as f64
            );
        }
        let _ = writeln!(
            s,
            "all     {:>4} tensors {:>12} bytes  {:>10}  (file {})",
            tensors.len(),
            all,
            bytes_h(all),
            bytes_h(self.file.file_size())
        );

        section(&mut s, "KV cache (F16)");
        match (&self.hparams, &self.kv) {
            (Ok(h), Some(kv)) => kv_text(&mut s, h, kv),
            (Err(e), _) => {
                let _ = writeln!(s, "not available: {e}");
            }
            _ => {}
        }
        s
    }
}

fn section(s: &mut String, title: &str) {
    let _ = writeln!(s, "\n== {title} ==");
}

fn hparams_text(s: &mut String, h: &HParams) {
    let group = h.n_head / h.n_head_kv;
    let attn = if h.n_head_kv == h.n_head {
        "MHA".to_string()
    } else if h.n_head_kv == 1 {
        format!("MQA, {group} query heads share 1 KV head")
    } else {
        format!("GQA, {group} query heads per KV head")
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("architecture", h.arch.name().into()),
        ("vocab", h.n_vocab.to_string()),
        ("n_ctx_train", h.n_ctx_train.to_string()),
        ("n_embd", h.n_embd.to_string()),
        ("n_layer", h.n_layer.to_string()),
        ("n_head", h.n_head.to_string()),
        ("n_head_kv", format!("{} ({attn})", h.n_head_kv)),
        (
            "head_dim (k / v)",
            format!("{} / {}", h.head_dim, h.head_dim_v),
        ),
        ("n_ff", h.n_ff.to_string()),
        ("rms_eps", format!("{:e}", h.rms_eps)),
        (
            "rope",
            format!(
                "{:?}, {} dims, base {}",
                h.rope_style, h.rope_dims, h.rope_base
            ),
        ),
        ("rope scaling", rope_scaling_text(h)),
        (
            "sliding window",
            match h.sliding_window {
                Some(w) => format!(
                    "{w} tokens on {} of {} layers (local rope base {})",
                    h.layer_is_local.iter().filter(|l| **l).count(),
                    h.n_layer,
                    h.rope_base_swa
                ),
                None => "none".into(),
            },
        ),
    ];
    if let Some(x) = &h.experts {
        rows.push((
            "experts",
            format!(
                "{} of {} per token ({:?} gating{}{}), {} wide{}{}",
                x.n_used,
                x.n_expert,
                x.gating,
                if x.norm { ", renormalised" } else { "" },
                if x.scale != 1.0 {
                    format!(", scaled ×{}", x.scale)
                } else {
                    String::new()
                },
                x.n_ff_exp,
                if x.n_shared > 0 {
                    format!(", {} shared", x.n_shared)
                } else {
                    String::new()
                },
                if x.n_leading_dense > 0 {
                    format!(", first {} layers dense", x.n_leading_dense)
                } else {
                    String::new()
                },
            ),
        ));
    }
    for (k, v) in rows {
        let _ = writeln!(s, "{k:<17} {v}");
    }
}

fn rope_scaling_text(h: &HParams) -> String {
    let r = &h.rope_scaling;
    match r.kind {
        RopeScalingType::None => "none".into(),
        RopeScalingType::Linear => format!("linear, factor {}", r.factor),
        RopeScalingType::Yarn => format!(
            "yarn, factor {}, original context {}, ext {}, attn {}, beta {}/{}",
            r.factor, r.orig_ctx, r.ext_factor, r.attn_factor, r.beta_fast, r.beta_slow
        ),
    }
}

fn kv_text(s: &mut String, h: &HParams, kv: &KvSummary) {
    let n_global = kv.layers.iter().filter(|l| !l.local).count();
    if let Some((k, v)) = h.mla_head_dims {
        let _ = writeln!(
            s,
            "MLA: one latent of {} values per layer ({} compressed + {} rotated; values read \
             from it); MHA equivalent: {} heads of {k}+{v} values",
            h.head_dim,
            h.head_dim_v,
            h.head_dim - h.head_dim_v,
            h.n_head
        );
        let gqa = (h.n_head / 4).max(1);
        let _ = writeln!(
            s,
            "{:<26} {:>11}   (GQA with {gqa} KV heads of {k}+{v})",
            "GQA equivalent per token",
            bytes_h((h.n_layer * h.kv_cell_bytes_equivalent(gqa, KV_ELEM_BYTES)) as u64)
        );
    } else {
        let _ = writeln!(
            s,
            "{} KV heads of {}+{} values per layer; MHA equivalent: {} KV heads",
            h.n_head_kv, h.head_dim, h.head_dim_v, h.n_head
        );
    }
    let _ = writeln!(
        s,
        "{:<26} {:>11}   MHA {:>11}",
        "per token",
        bytes_h(kv.per_token as u64),
        bytes_h(kv.per_token_mha as u64)
    );
    if kv.per_token_beyond_window != kv.per_token {
        let _ = writeln!(
            s,
            "{:<26} {:>11}   (only the {n_global} global layers keep growing)",
            "per token past the window",
            bytes_h(kv.per_token_beyond_window as u64)
        );
    }
    let _ = writeln!(
        s,
        "{:<26} {:>11}   MHA {:>11}",
        format!("at n_ctx {}", kv.n_ctx),
        bytes_h(kv.total as u64),
        bytes_h(kv.total_mha as u64)
    );
    if kv.total_full_attention != kv.total {
        let _ = writeln!(
            s,
            "{:<26} {:>11}",
            "  without sliding window",
            bytes_h(kv.total_full_attention as u64)
        );
    }
    let _ = writeln!(
        s,
        "\n{:>5}  {:<6} {:>7} {:>10} {:>7} {:>12} {:>12}",
        "layer", "attn", "window", "rope base", "cells", "KV", "KV (MHA)"
    );
    for (il, l) in kv.layers.iter().enumerate() {
        let _ = writeln!(
            s,
            "{il:>5}  {:<6} {:>7} {:>10} {:>7} {:>12} {:>12}",
            if l.local { "local" } else { "global" },
            l.window.map_or("-".into(), |w| w.to_string()),
            l.rope_base,
            l.cells,
            bytes_h(l.bytes as u64),
            bytes_h(l.bytes_mha as u64)
        );
    }
}

fn hparams_json(h: &HParams) -> Value {
    let r = &h.rope_scaling;
    json!({
        "arch": h.arch.name(),
        "n_vocab": h.n_vocab,
        "n_ctx_train": h.n_ctx_train,
        "n_embd": h.n_embd,
        "n_layer": h.n_layer,
        "n_head": h.n_head,
        "n_head_kv": h.n_head_kv,
        "head_dim": h.head_dim,
        "head_dim_v": h.head_dim_v,
        "n_ff": h.n_ff,
        "rms_eps": f32_json(h.rms_eps),
        "rope_base": f32_json(h.rope_base),
        "rope_base_swa": f32_json(h.rope_base_swa),
        "rope_dims": h.rope_dims,
        "rope_style": format!("{:?}", h.rope_style).to_lowercase(),
        "rope_scaling": {
            "type": format!("{:?}", r.kind).to_lowercase(),
            "factor": f32_json(r.factor),
            "orig_ctx": r.orig_ctx,
            "ext_factor": f32_json(r.ext_factor),
            "attn_factor": f32_json(r.attn_factor),
            "beta_fast": f32_json(r.beta_fast),
            "beta_slow": f32_json(r.beta_slow),
        },
        "sliding_window": h.sliding_window,
        "layer_is_local": h.layer_is_local,
    })
}

fn tensor_json(t: &TensorInfo) -> Value {
    json!({
        "name": t.name,
        "dtype": t.dtype.name(),
        "shape": t.shape,
        "bytes": t.n_bytes,
    })
}

/// An f32 as JSON, printed with its shortest decimal form (1e-5, not 9.999999747378752e-6).
fn f32_json(v: f32) -> Value {
    if v.is_finite() {
        let shortest: f64 = v.to_string().parse().unwrap_or(v as f64);
        json!(shortest)
    } else {
        json!(v.to_string())
    }
}

fn f64_json(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        json!(v.to_string())
    }
}

/// A metadata value as JSON; arrays longer than [`MAX_LISTED_ARRAY`] become
/// `{"type": "array<T>", "len": N}`.
fn meta_json(v: &MetaValue) -> Value {
    match v {
        MetaValue::U8(x) => json!(x),
        MetaValue::I8(x) => json!(x),
        MetaValue::U16(x) => json!(x),
        MetaValue::I16(x) => json!(x),
        MetaValue::U32(x) => json!(x),
        MetaValue::I32(x) => json!(x),
        MetaValue::U64(x) => json!(x),
        MetaValue::I64(x) => json!(x),
        MetaValue::F32(x) => f32_json(*x),
        MetaValue::F64(x) => f64_json(*x),
        MetaValue::Bool(x) => json!(x),
        MetaValue::String(x) => json!(x),
        MetaValue::Array(a) => array_json(a),
    }
}

fn array_json(a: &MetaArray) -> Value {
    if a.len() > MAX_LISTED_ARRAY {
        return json!({"type": format!("array<{}>", a.elem_type_name()), "len": a.len()});
    }
    match a {
        MetaArray::U8(v) => json!(v),
        MetaArray::I8(v) => json!(v),
        MetaArray::U16(v) => json!(v),
        MetaArray::I16(v) => json!(v),
        MetaArray::U32(v) => json!(v),
        MetaArray::I32(v) => json!(v),
        MetaArray::U64(v) => json!(v),
        MetaArray::I64(v) => json!(v),
        MetaArray::F32(v) => Value::Array(v.iter().map(|x| f32_json(*x)).collect()),
        MetaArray::F64(v) => Value::Array(v.iter().map(|x| f64_json(*x)).collect()),
        MetaArray::Bool(v) => json!(v),
        MetaArray::String(v) => json!(v),
        MetaArray::Array(v) => Value::Array(v.iter().map(array_json).collect()),
    }
}

/// A metadata value for the text listing: long strings cut, long arrays summarised.
fn meta_text(v: &MetaValue) -> String {
    match v {
        MetaValue::String(x) if x.chars().count() > 100 => {
            let head: String = x.chars().take(60).collect();
            format!("{head:?}… ({} characters)", x.chars().count())
        }
        MetaValue::Array(a) if a.len() <= MAX_LISTED_ARRAY => array_json(a).to_string(),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_arrays_are_summarised() {
        let long = MetaValue::Array(MetaArray::String(vec!["a".into(); 17]));
        assert_eq!(
            meta_json(&long),
            json!({"type": "array<string>", "len": 17})
        );
        let short = MetaValue::Array(MetaArray::I32(vec![1, 2]));
        assert_eq!(meta_json(&short), json!([1, 2]));
        assert_eq!(meta_json(&MetaValue::F32(1e-5)), json!(1e-5));
    }
}
