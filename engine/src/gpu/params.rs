//! The uniform parameter block of every kernel and the element-wise op codes, declared once
//! in Rust: each block is a `#[repr(C)]` [`bytemuck::Pod`] struct whose WGSL `struct`
//! declaration is generated from the same field list, and the code tables' WGSL `const`
//! lines (element-wise `OP_*`, router `GATING_*`) from the same enum, so the two sides cannot
//! disagree. The kernel sources get them
//! prepended by [`super::shaders::Kernel::source`].

/// A 4-byte scalar spelled the same in Rust and WGSL (`u32`, `i32`, `f32`): the only field
/// types a parameter block may have, so it has no padding and the same layout on both sides.
pub trait WgslScalar: bytemuck::Pod {}

impl WgslScalar for u32 {}
impl WgslScalar for i32 {}
impl WgslScalar for f32 {}

/// Compiles only for [`WgslScalar`] types (the field check of `kernel_params!`).
const fn assert_wgsl_scalar<T: WgslScalar>() {}

/// A kernel's uniform parameter block.
pub trait KernelParams: bytemuck::Pod {
    /// The WGSL declaration of the same struct, under the same name.
    const WGSL: &'static str;
}

/// Declares parameter blocks: each becomes a `#[repr(C)]` Pod struct with public fields and
/// a [`KernelParams::WGSL`] declaration listing the same fields, in the same order, with the
/// same names and types (field doc comments become WGSL comments).
macro_rules! kernel_params {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident {
            $( $(#[doc = $fdoc:literal])* $field:ident: $ty:ident, )*
        }
    )*) => {$(
        $(#[doc = $doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $( $(#[doc = $fdoc])* pub $field: $ty, )*
        }

        impl KernelParams for $name {
            const WGSL: &'static str = concat!(
                "struct ", stringify!($name), " {\n",
                $( $("    //", $fdoc, "\n",)* "    ", stringify!($field), ": ", stringify!($ty), ",\n", )*
                "}\n"
            );
        }

        const _: () = { $( assert_wgsl_scalar::<$ty>(); )* };
    )*};
}

kernel_params! {
    /// `get_rows.wgsl`: embedding rows of the step's tokens from one row chunk of the table.
    GetRowsUniforms {
        /// Arena offset of the output.
        out_off: u32,
        /// Values per row.
        n_cols: u32,
        /// Bytes per row of the table.
        row_bytes: u32,
        /// First table row of the chunk.
        row0: u32,
        /// Table rows in the chunk.
        n_rows: u32,
        /// Step-buffer offset of the token ids.
        tok_off: u32,
        /// Tokens in the step.
        n_tok: u32,
    }

    /// `rms_norm.wgsl`: RMS normalisation of groups of values, with an optional f32 gain.
    RmsNormUniforms {
        /// Arena offset of the input.
        x_off: u32,
        /// Arena offset of the output.
        out_off: u32,
        /// Values per normalised group.
        group: u32,
        /// Groups.
        n_groups: u32,
        /// Added to the mean square.
        eps: f32,
        /// 1 when the gain is bound, else 0.
        has_weight: u32,
        /// Workgroups along x (the grid is 2-D).
        grid_x: u32,
    }

    /// `elementwise.wgsl`: one [`ElementwiseOp`] over `n` values.
    ElementwiseUniforms {
        /// Arena offset of the first operand.
        a_off: u32,
        /// Arena offset of the second operand (unused by scale and copy).
        b_off: u32,
        /// Arena offset of the output.
        out_off: u32,
        /// Values.
        n: u32,
        /// The op, an `OP_*` code.
        op: u32,
        /// The factor of scale, the cap of softcap.
        s: f32,
        /// Workgroups along x (the grid is 2-D).
        grid_x: u32,
        /// Values per row (add_bias: the bias's length; moe_sum: values per part; columns:
        /// values taken per group; concat: `a`'s values per group).
        cols: u32,
        /// Parts summed into each output value (moe_sum, add_bias_id: experts per token;
        /// columns: the group width; concat: `b`'s values per group), else 0.
        parts: u32,
        /// The clamp of swiglu_oai (its α is `s`).
        limit: f32,
    }

    /// `matrix_common.wgsl`: the mat-vec and mat-mul kernels, over one row chunk of a weight.
    MatrixUniforms {
        /// Arena offset of the input rows.
        x_off: u32,
        /// Arena offset of the output.
        out_off: u32,
        /// Values per input row.
        n_in: u32,
        /// Weight rows in the chunk.
        n_rows: u32,
        /// Bytes per weight row.
        row_bytes: u32,
        /// Values per output row (all the weight's rows).
        out_stride: u32,
        /// First weight row of the chunk.
        row0: u32,
        /// Input rows (tokens).
        n_tok: u32,
        /// Workgroups along x (the grid is 2-D).
        grid_x: u32,
    }

    /// `act_round.wgsl`: a mat-mul's activations rounded as the CPU quantizes them, block by
    /// block, into a copy.
    ActRoundUniforms {
        /// Arena offset of the activations.
        src_off: u32,
        /// Arena offset of the rounded copy.
        dst_off: u32,
        /// Blocks (of the kernel's `BLOCK` values).
        n_blocks: u32,
        /// Workgroups along x (the grid is 2-D).
        grid_x: u32,
    }

    /// `matvec_id.wgsl`: the chosen experts' mat-vecs of a mat_mul_id, one (token, slot) pair
    /// and a block of output rows per workgroup, over one expert chunk of the stacked weight.
    MatrixIdUniforms {
        /// Arena offset of the input rows.
        x_off: u32,
        /// Arena offset of the output.
        out_off: u32,
        /// Values per input part (the weight's row length).
        n_in: u32,
        /// Output rows per expert.
        n_out: u32,
        /// Bytes per weight row.
        row_bytes: u32,
        /// Values per input row (`n_in`, or `n_used·n_in` for one part per slot).
        x_row: u32,
        /// Values between consecutive slots' inputs in a row (0: all read the same part).
        x_slot: u32,
        /// Arena offset of the route (`rows × 2·n_used`: ids, then weights).
        route_off: u32,
        /// Experts chosen per token.
        n_used: u32,
        /// First expert held by the weight chunk.
        e0: u32,
        /// Experts held by the weight chunk.
        n_chunk: u32,
        /// (token, slot) pairs: rows × n_used.
        n_pairs: u32,
        /// Workgroups per pair (along the expert's output rows).
        row_groups: u32,
        /// Workgroups along x (the grid is 2-D).
        grid_x: u32,
        /// 1: slot `j` uses matrix `j` and no route is read (mat_mul_heads), else 0.
        fixed: u32,
    }

    /// `moe_route.wgsl`: a mixture-of-experts router, one workgroup per row.
    MoeRouteUniforms {
        /// Arena offset of the logits.
        logits_off: u32,
        /// Arena offset of the output (ids, then weights).
        out_off: u32,
        /// Experts (logits per row).
        n_expert: u32,
        /// Experts chosen per row.
        n_used: u32,
        /// Rows.
        n_rows: u32,
        /// The gating, a `GATING_*` code.
        gating: u32,
        /// 1: divide the weights by their sum (clamped below).
        norm: u32,
        /// Multiplier of the weights.
        scale: f32,
        /// 1 when the choice bias is bound, else 0.
        has_bias: u32,
        /// Workgroups along x (the grid is 2-D).
        grid_x: u32,
        /// Expert groups of group-limited routing (0: none).
        n_group: u32,
        /// Groups whose experts may be chosen (with `n_group` > 0).
        n_group_used: u32,
    }

    /// `rope.wgsl`: rotary embedding with a table from the step buffer.
    RopeUniforms {
        /// Arena offset of the input.
        x_off: u32,
        /// Arena offset of the output.
        out_off: u32,
        /// Rows (tokens).
        n_tok: u32,
        /// Values per row.
        cols: u32,
        /// Values per head.
        head_dim: u32,
        /// Rotated values per head.
        n_dims: u32,
        /// 1 for NeoX rotation (halves), 0 for adjacent pairs.
        neox: u32,
        /// Step-buffer offset of the `(cos, sin)` table.
        table_off: u32,
        /// Workgroups along x (the grid is 2-D).
        grid_x: u32,
    }

    /// `attention_common.wgsl`: the prompt and split-K flash-attention kernels.
    AttentionUniforms {
        /// Arena offset of the queries.
        q_off: u32,
        /// Arena offset of the batch's keys.
        k_off: u32,
        /// Arena offset of the batch's values.
        v_off: u32,
        /// Arena offset of the output.
        out_off: u32,
        /// Query heads.
        n_head: u32,
        /// KV heads.
        n_head_kv: u32,
        /// Key width per head.
        dk: u32,
        /// Value width per head.
        dv: u32,
        /// Score scale.
        scale: f32,
        /// Sliding window in positions (0: none).
        window: u32,
        /// Score soft-cap (0: none).
        softcap: f32,
        /// 1 when the sinks (one F32 logit per query head) are bound, else 0.
        has_sinks: u32,
        /// Step-buffer offset of the positions.
        pos_off: u32,
        /// Step-buffer offset of the sequence group's scan info `[lo, n_scan, n_cells,
        /// n_split, values_in_keys, tok0, n_tok]`.
        info_off: u32,
        /// Most split-K workgroups per head (the partials are sized for it).
        max_splits: u32,
    }

    /// `attention_reduce.wgsl`: combines the split-K partials.
    AttnReduceUniforms {
        /// Arena offset of the output.
        out_off: u32,
        /// Query heads.
        n_head: u32,
        /// Value width per head.
        dv: u32,
        /// Step-buffer offset of the sequence group's scan info.
        info_off: u32,
        /// 1 when the sinks (one F32 logit per query head) are bound, else 0.
        has_sinks: u32,
    }

    /// `kv_write.wgsl`: writes the batch's K/V into the cache.
    KvWriteUniforms {
        /// Arena offset of the batch's keys.
        k_off: u32,
        /// Arena offset of the batch's values.
        v_off: u32,
        /// Key values per token (all KV heads).
        kw: u32,
        /// Value values per token (all KV heads).
        vw: u32,
        /// Step-buffer offset of the sequence group's scan info.
        info_off: u32,
        /// Step-buffer offset of the positions.
        pos_off: u32,
    }
}

/// Declares a code enum with its WGSL constant names, its `ALL` list, and `wgsl_consts`.
macro_rules! op_codes {
    ($(#[doc = $doc:literal])* $name:ident {
        $( $(#[doc = $vdoc:literal])* $variant:ident = $code:literal => $wgsl:literal, )*
    }) => {
        $(#[doc = $doc])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $( $(#[doc = $vdoc])* $variant = $code, )*
        }

        impl $name {
            /// Every op, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The name of the code's WGSL constant.
            pub fn wgsl_name(self) -> &'static str {
                match self {
                    $( $name::$variant => $wgsl, )*
                }
            }

            /// The code as the kernels see it.
            pub fn code(self) -> u32 {
                self as u32
            }

            /// The WGSL `const …: u32 = …u;` lines of every code.
            pub fn wgsl_consts() -> String {
                $name::ALL
                    .iter()
                    .map(|c| format!("const {}: u32 = {}u;\n", c.wgsl_name(), c.code()))
                    .collect()
            }
        }
    };
}

op_codes! {
    /// What `elementwise.wgsl` computes (the `op` of [`ElementwiseUniforms`]).
    ElementwiseOp {
        /// `a + b`.
        Add = 0 => "OP_ADD",
        /// `a · b`.
        Mul = 1 => "OP_MUL",
        /// `a · s`.
        Scale = 2 => "OP_SCALE",
        /// `silu(a) · b`.
        SwiGlu = 3 => "OP_SWIGLU",
        /// `gelu(a) · b`.
        GeGlu = 4 => "OP_GEGLU",
        /// `a`.
        Copy = 5 => "OP_COPY",
        /// `a + bias[i % cols]` (the bias in the weight binding).
        AddBias = 6 => "OP_ADD_BIAS",
        /// `s · tanh(a / s)`.
        Softcap = 7 => "OP_SOFTCAP",
        /// `Σ_j a[j·cols + c] · w_j` over `parts` parts of each row of `a`, `w_j` the route's
        /// weights at `b` (rows of `2·parts`: ids, then weights), in slot order.
        MoeSum = 8 => "OP_MOE_SUM",
        /// `a[(i / cols)·parts + i % cols]`: `cols` columns of every group of `parts` (the
        /// first column taken folded into `a_off`).
        Columns = 9 => "OP_COLUMNS",
        /// Groups of `cols` values of `a` then `parts` values of `b`, group by group.
        Concat = 10 => "OP_CONCAT",
        /// gpt-oss's clamped SwiGLU: `g = min(a, limit)`, `u = clamp(b, −limit, limit)`,
        /// `g / (1 + e^(−s·g)) · (u + 1)`.
        SwiGluOai = 11 => "OP_SWIGLU_OAI",
        /// `a + bias_e[i % cols]` per (token, slot): part `j` of row `t` (`parts` parts of
        /// `cols` values) gets row `e` of the bias (in the weight binding), `e` the expert id
        /// the route at `b` chose in slot `j` (rows of `2·parts`: ids, then weights).
        AddBiasId = 12 => "OP_ADD_BIAS_ID",
        /// `max(a, 0)²` (squared ReLU).
        ReluSqr = 13 => "OP_RELU_SQR",
        /// `a[r·cols + i % cols]`, `r` the step's output row `i / cols` (the step buffer in
        /// the weight binding, its output rows at `b`).
        SelectRows = 14 => "OP_SELECT_ROWS",
    }
}

op_codes! {
    /// How `moe_route.wgsl` turns logits into scores (the `gating` of [`MoeRouteUniforms`]),
    /// one code per [`crate::graph::ExpertGating`].
    GatingCode {
        /// Softmax over all experts.
        Softmax = 0 => "GATING_SOFTMAX",
        /// A sigmoid per logit.
        Sigmoid = 1 => "GATING_SIGMOID",
        /// The logits chosen, then a softmax over the chosen.
        SoftmaxWeight = 2 => "GATING_SOFTMAX_WEIGHT",
    }
}

impl GatingCode {
    /// The code of `g`.
    pub fn of(g: crate::graph::ExpertGating) -> GatingCode {
        use crate::graph::ExpertGating as G;
        match g {
            G::Softmax => GatingCode::Softmax,
            G::Sigmoid => GatingCode::Sigmoid,
            G::SoftmaxWeight => GatingCode::SoftmaxWeight,
        }
    }
}

/// The words of `params` as they go into the uniform buffer.
pub fn words<P: KernelParams>(params: &P) -> &[u32] {
    bytemuck::cast_slice(std::slice::from_ref(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_list_the_fields_in_order() {
        assert_eq!(
            AttnReduceUniforms::WGSL,
            "struct AttnReduceUniforms {\n    // Arena offset of the output.\n    out_off: u32,\n    \
             // Query heads.\n    n_head: u32,\n    // Value width per head.\n    dv: u32,\n    \
             // Step-buffer offset of the sequence group's scan info.\n    info_off: u32,\n    \
             // 1 when the sinks (one F32 logit per query head) are bound, else 0.\n    \
             has_sinks: u32,\n}\n"
        );
        assert!(RmsNormUniforms::WGSL.contains("    eps: f32,\n    // 1 when"));
    }

    #[test]
    fn words_follow_the_field_order() {
        let p = ElementwiseUniforms {
            a_off: 1,
            b_off: 2,
            out_off: 3,
            n: 4,
            op: ElementwiseOp::Scale.code(),
            s: 0.5,
            grid_x: 7,
            cols: 8,
            parts: 9,
            limit: 7.0,
        };
        assert_eq!(
            words(&p),
            [1, 2, 3, 4, 2, 0.5f32.to_bits(), 7, 8, 9, 7.0f32.to_bits()]
        );
    }

    #[test]
    fn op_constants() {
        assert_eq!(ElementwiseOp::ALL.len(), 15);
        for (i, op) in ElementwiseOp::ALL.iter().enumerate() {
            assert_eq!(op.code(), i as u32);
        }
        assert!(ElementwiseOp::wgsl_consts().contains("const OP_GEGLU: u32 = 4u;\n"));
        assert!(GatingCode::wgsl_consts().contains("const GATING_SIGMOID: u32 = 1u;\n"));
    }
}
