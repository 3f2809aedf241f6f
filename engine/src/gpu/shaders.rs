//! The WGSL kernels, embedded at build time from the workspace's `shaders/` folder, and the
//! composition of a kernel's source: kernels that read quantized weights get the block
//! decoders of `quant.wgsl` and a `dq` function for the weight's type appended; the
//! weight-matrix kernels get `matrix_common.wgsl` (parameters, bindings) before them, the
//! attention kernels `attention_common.wgsl`; the activation rounding (`act_round.wgsl`) gets
//! the rounding function of its format. Every kernel starts with the declarations
//! generated from [`super::params`]: its uniform parameter struct (and, for the element-wise
//! kernel, the `OP_*` codes; for the router, the `GATING_*` codes).

use super::params::{
    ActRoundUniforms, AttentionUniforms, AttnReduceUniforms, ElementwiseOp, ElementwiseUniforms,
    GatingCode, GetRowsUniforms, KernelParams, KvWriteUniforms, MatrixIdUniforms, MatrixUniforms,
    MoeRouteUniforms, RmsNormUniforms, RopeUniforms,
};
use crate::DType;

const QUANT: &str = include_str!("../../../shaders/quant.wgsl");
const MATRIX_COMMON: &str = include_str!("../../../shaders/matrix_common.wgsl");
const MATVEC: &str = include_str!("../../../shaders/matvec.wgsl");
const MATVEC_ROW: &str = include_str!("../../../shaders/matvec_row.wgsl");
const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
const MATVEC_ID: &str = include_str!("../../../shaders/matvec_id.wgsl");
const ACT_ROUND: &str = include_str!("../../../shaders/act_round.wgsl");
const MATMUL_ID: &str = include_str!("../../../shaders/matmul_id.wgsl");
const MOE_ROUTE: &str = include_str!("../../../shaders/moe_route.wgsl");
const GET_ROWS: &str = include_str!("../../../shaders/get_rows.wgsl");
const RMS_NORM: &str = include_str!("../../../shaders/rms_norm.wgsl");
const ELEMENTWISE: &str = include_str!("../../../shaders/elementwise.wgsl");
const ROPE: &str = include_str!("../../../shaders/rope.wgsl");
const ATTN_COMMON: &str = include_str!("../../../shaders/attention_common.wgsl");
const ATTN_PREFILL: &str = include_str!("../../../shaders/attention_prefill.wgsl");
const ATTN_DECODE: &str = include_str!("../../../shaders/attention_decode.wgsl");
const ATTN_REDUCE: &str = include_str!("../../../shaders/attention_reduce.wgsl");
const KV_WRITE: &str = include_str!("../../../shaders/kv_write.wgsl");

/// One compute kernel, specialised by weight type where it reads weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Matrix-vector product for up to 8 tokens, with this many invocations per row (1: the
    /// barrier-free kernel for CPU adapters), summed by subgroup shuffles if `true` (the
    /// adapter's subgroups are at least that wide), else through workgroup memory.
    MatVec(DType, u32, bool),
    /// Tiled matrix product for prompts.
    MatMul(DType),
    /// The chosen experts' mat-vecs of a mat_mul_id, per (token, slot) pair, with this many
    /// invocations per row, summed by subgroup shuffles if `true` (as [`Kernel::MatVec`]).
    MatVecId(DType, u32, bool),
    /// Rounds activations as the CPU quantizes them to this activation format (a
    /// `vec_dot_type` with a `gpu_rounding` in the format table).
    ActRound(DType),
    /// The chosen experts' products of a mat_mul_id for prompts, tiled over each expert's
    /// (token, slot) entries, grouped on the GPU from the route.
    MatMulId(DType),
    /// Mixture-of-experts router.
    MoeRoute,
    /// Embedding lookup.
    GetRows(DType),
    /// RMS normalisation with optional f32 gain.
    RmsNorm,
    /// Add, mul, scale, gated activations, copy.
    Elementwise,
    /// Rotary embedding from a host-computed table.
    Rope,
    /// Flash attention over query tiles, for value heads up to this many 256-value chunks
    /// (1 to 4).
    AttnPrefill(u32),
    /// Split-K flash attention for a few queries.
    AttnDecode,
    /// Combines the split-K partials.
    AttnReduce,
    /// Writes the batch's K/V into the cache.
    KvWrite,
}

/// The `quant.wgsl` decoder of `dtype`, if the GPU backend has one (the `gpu_decoder` of its
/// entry in the format table, [`crate::quant::FORMATS`]).
pub fn decoder(dtype: DType) -> Option<&'static str> {
    crate::quant::format(dtype).and_then(|f| f.gpu_decoder)
}

/// The activation format the CPU quantizes activations to before multiplying them with weights
/// of `weight` type, and the `act_round.wgsl` function rounding them the same way; `None` where
/// they stay f32. Both come from the format table ([`crate::quant::FORMATS`]).
pub fn activation_rounding(weight: DType) -> Option<(DType, &'static str)> {
    let act = crate::quant::format(weight)?.vec_dot_type();
    let f = crate::quant::format(act)?.gpu_rounding?;
    Some((act, f))
}

fn with_decoder(kernel: &str, dtype: DType) -> String {
    let dq = decoder(dtype).expect("callers check decoder() first");
    let block = dq.replacen("dq_", "blk_", 1);
    format!(
        "{kernel}\n{QUANT}\nfn dq(base: u32, i: u32) -> f32 {{\n    return {dq}(base, i);\n}}\n\
         fn dq_block(base: u32, blk: u32) {{\n    {block}(base, blk);\n}}\n"
    )
}

/// A mat-vec kernel (matvec.wgsl, matvec_id.wgsl) with its workgroup reduction (the lines
/// between the `reduce` markers) replaced by a butterfly of subgroup shuffles over each row's
/// TPR consecutive lanes.
fn subgroup_reduce(src: &str) -> String {
    let line_start = |marker: &str| {
        let at = src.find(marker).expect("the kernel marks its reduction");
        src[..at].rfind('\n').map_or(0, |n| n + 1)
    };
    let a = line_start("// reduce:begin");
    let end = "// reduce:end\n";
    let b = src.find(end).expect("the kernel marks its reduction") + end.len();
    let butterfly = "        var s = dot_acc;\n\
                     \x20       for (var m = TPR / 2u; m > 0u; m >>= 1u) {\n\
                     \x20           s += subgroupShuffleXor(s, m);\n\
                     \x20       }\n";
    format!("{}{butterfly}{}", &src[..a], &src[b..])
}

impl Kernel {
    /// The WGSL declarations generated on the Rust side that the kernel's source expects:
    /// its uniform parameter struct, and the element-wise op codes.
    pub fn prelude(self) -> String {
        match self {
            Kernel::MatVec(..) | Kernel::MatMul(_) => MatrixUniforms::WGSL.into(),
            Kernel::MatVecId(..) | Kernel::MatMulId(_) => MatrixIdUniforms::WGSL.into(),
            Kernel::ActRound(_) => ActRoundUniforms::WGSL.into(),
            Kernel::MoeRoute => {
                format!("{}\n{}", MoeRouteUniforms::WGSL, GatingCode::wgsl_consts())
            }
            Kernel::GetRows(_) => GetRowsUniforms::WGSL.into(),
            Kernel::RmsNorm => RmsNormUniforms::WGSL.into(),
            Kernel::Elementwise => {
                format!(
                    "{}\n{}",
                    ElementwiseUniforms::WGSL,
                    ElementwiseOp::wgsl_consts()
                )
            }
            Kernel::Rope => RopeUniforms::WGSL.into(),
            Kernel::AttnPrefill(_) | Kernel::AttnDecode => AttentionUniforms::WGSL.into(),
            Kernel::AttnReduce => AttnReduceUniforms::WGSL.into(),
            Kernel::KvWrite => KvWriteUniforms::WGSL.into(),
        }
    }

    /// The complete WGSL source: the [`Kernel::prelude`], then the kernel.
    pub fn source(self) -> String {
        format!("{}\n{}", self.prelude(), self.body())
    }

    /// The kernel's WGSL composed from `shaders/`, without the prelude.
    fn body(self) -> String {
        match self {
            Kernel::MatVec(t, 1, _) => with_decoder(&format!("{MATRIX_COMMON}\n{MATVEC_ROW}"), t),
            Kernel::MatVec(t, tpr, subgroups) => {
                let src = format!("{MATRIX_COMMON}\n{MATVEC}").replace(
                    "const TPR: u32 = 16u;",
                    &format!("const TPR: u32 = {tpr}u;"),
                );
                let src = if subgroups {
                    subgroup_reduce(&src)
                } else {
                    src
                };
                with_decoder(&src, t)
            }
            Kernel::MatMul(t) => with_decoder(&format!("{MATRIX_COMMON}\n{MATMUL}"), t),
            Kernel::MatVecId(t, tpr, subgroups) => {
                let src = MATVEC_ID.replace(
                    "const TPR: u32 = 16u;",
                    &format!("const TPR: u32 = {tpr}u;"),
                );
                let src = if subgroups {
                    subgroup_reduce(&src)
                } else {
                    src
                };
                with_decoder(&src, t)
            }
            Kernel::ActRound(t) => {
                let f = crate::quant::format(t)
                    .and_then(|f| f.gpu_rounding)
                    .expect("callers take the type from activation_rounding()");
                format!(
                    "{}\nfn round_block(src: u32, dst: u32) {{\n    {f}(src, dst);\n}}\n",
                    ACT_ROUND.replace(
                        "const BLOCK: u32 = 32u;",
                        &format!("const BLOCK: u32 = {}u;", t.block_elems())
                    )
                )
            }
            Kernel::MatMulId(t) => with_decoder(MATMUL_ID, t),
            Kernel::MoeRoute => MOE_ROUTE.into(),
            Kernel::GetRows(t) => with_decoder(GET_ROWS, t),
            Kernel::RmsNorm => RMS_NORM.into(),
            Kernel::Elementwise => ELEMENTWISE.into(),
            Kernel::Rope => ROPE.into(),
            Kernel::AttnPrefill(vch) => format!("{ATTN_COMMON}\n{ATTN_PREFILL}")
                .replace("const VCH: u32 = 1u;", &format!("const VCH: u32 = {vch}u;"))
                .replace(
                    "const NACC: u32 = 4u;",
                    &format!("const NACC: u32 = {}u;", 4 * vch),
                ),
            Kernel::AttnDecode => format!("{ATTN_COMMON}\n{ATTN_DECODE}"),
            Kernel::AttnReduce => ATTN_REDUCE.into(),
            Kernel::KvWrite => KV_WRITE.into(),
        }
    }

    /// A label for the pipeline.
    pub fn label(self) -> String {
        format!("{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel, with each weight type the kernels decode.
    fn all_kernels() -> Vec<Kernel> {
        let mut kernels = vec![
            Kernel::RmsNorm,
            Kernel::Elementwise,
            Kernel::Rope,
            Kernel::AttnPrefill(1),
            Kernel::AttnPrefill(2),
            Kernel::AttnPrefill(3),
            Kernel::AttnPrefill(4),
            Kernel::AttnDecode,
            Kernel::AttnReduce,
            Kernel::KvWrite,
            Kernel::MoeRoute,
        ];
        for t in DType::ALL {
            if crate::quant::format(t).is_some_and(|f| f.gpu_rounding.is_some()) {
                kernels.push(Kernel::ActRound(t));
            }
            if decoder(t).is_some() {
                kernels.extend([
                    Kernel::MatVec(t, 1, false),
                    Kernel::MatVec(t, 16, false),
                    Kernel::MatVec(t, 8, true),
                    Kernel::MatMul(t),
                    Kernel::GetRows(t),
                    Kernel::MatVecId(t, 1, false),
                    Kernel::MatVecId(t, 16, false),
                    Kernel::MatVecId(t, 8, true),
                    Kernel::MatMulId(t),
                ]);
            }
        }
        kernels
    }

    /// The rounding kernel takes its block length from the format and calls its format's
    /// function.
    #[test]
    fn act_round_is_specialised_per_format() {
        for (t, block, f) in [
            (DType::Q8_0, 32, "act_q8_0"),
            (DType::Q8_1, 32, "act_q8_0"),
            (DType::Q8_K, 256, "act_q8_k"),
            (DType::F16, 1, "act_f16"),
            (DType::BF16, 1, "act_bf16"),
        ] {
            let src = Kernel::ActRound(t).source();
            assert!(
                src.contains(&format!("const BLOCK: u32 = {block}u;")),
                "{t}"
            );
            assert!(src.contains(&format!("    {f}(src, dst);")), "{t}");
        }
        assert_eq!(
            activation_rounding(DType::Q4_1),
            Some((DType::Q8_1, "act_q8_0"))
        );
        assert_eq!(
            activation_rounding(DType::Q4_K),
            Some((DType::Q8_K, "act_q8_k"))
        );
        assert_eq!(
            activation_rounding(DType::MXFP4),
            Some((DType::Q8_0, "act_q8_0"))
        );
        assert_eq!(activation_rounding(DType::F32), None);
    }

    /// Every kernel parses and validates with naga (no GPU needed).
    #[test]
    fn every_kernel_validates() {
        for k in all_kernels() {
            let src = k.source();
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{k:?}: {}", e.emit_to_string(&src)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                // pack2x16float needs the first; every Vulkan, Metal and DX12 device has it.
                // Subgroup shuffles are only composed in where the adapter has them.
                naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
                    | naga::valid::Capabilities::SUBGROUP,
            )
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{k:?}: {e:?}"));
        }
    }

    /// Every kernel reads its parameters through the struct generated from `params.rs`, and
    /// the element-wise codes come from there too: a hand-written copy in a shader could drift
    /// from the Rust side.
    #[test]
    fn every_kernel_reads_the_generated_uniform_struct() {
        for k in all_kernels() {
            let prelude = k.prelude();
            let name = prelude
                .strip_prefix("struct ")
                .and_then(|s| s.split_whitespace().next())
                .expect("the prelude starts with the parameter struct");
            let body = k.body();
            let uniforms: Vec<&str> = body
                .lines()
                .filter(|l| l.contains("var<uniform>"))
                .collect();
            assert_eq!(uniforms.len(), 1, "{k:?}: one uniform binding");
            assert!(
                uniforms[0].trim_end().ends_with(&format!(": {name};")),
                "{k:?} declares {:?}, not the generated {name}",
                uniforms[0]
            );
            assert!(!body.contains("struct Params"), "{k:?}");
            assert!(!body.contains("const OP_"), "{k:?}");
        }
    }
}
