//! Mixture of experts: the hyper-parameters GGUF files give (`{arch}.expert_count`,
//! `expert_used_count`, `expert_feed_forward_length`, gating, weight normalisation and scale,
//! leading dense layers, expert groups) and the routed feed-forward block: a router (`ffn_gate_inp`) chooses
//! experts per token, each chosen expert's gated FFN runs on it (`ffn_{gate,up,down}_exps`,
//! stacked 3-D weights of which only chosen experts are read), and their outputs are summed
//! with the router's weights.

use tessera_engine::Tensor;
use tessera_engine::gguf::Metadata;
use tessera_engine::graph::{
    ExpertGating, ExpertGroups, GraphBuilder, MAX_EXPERTS, MAX_EXPERTS_USED, NodeId, RouteParams,
};

use crate::blocks::{Gate, layer_bias, layer_tensor};
use crate::error::{ModelError, Result};
use crate::hparams::HParams;
use crate::weights::WeightLoader;

/// A model's expert settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Experts {
    /// Experts per MoE layer.
    pub n_expert: usize,
    /// Experts chosen per token.
    pub n_used: usize,
    /// Hidden width of one expert's feed-forward.
    pub n_ff_exp: usize,
    /// Shared experts (always used), when the family has them.
    pub n_shared: usize,
    /// Leading layers with a dense feed-forward instead of experts.
    pub n_leading_dense: usize,
    /// How router logits become scores.
    pub gating: ExpertGating,
    /// Whether the chosen weights are renormalised to sum to 1.
    pub norm: bool,
    /// Factor on the weights (1 for none).
    pub scale: f32,
    /// Group-limited routing (`expert_group_count` > 1 and `expert_group_used_count`).
    pub groups: Option<ExpertGroups>,
}

impl Experts {
    /// Read `{arch}.expert_*` keys; `None` when the file has no `expert_count` (or 0).
    /// Families fix some settings in code where the file is silent: `norm_default` (Qwen3-MoE
    /// always renormalises) and `gating_default`.
    pub fn read(
        meta: &Metadata,
        arch: &str,
        n_ff: usize,
        norm_default: bool,
        gating_default: ExpertGating,
    ) -> Result<Option<Experts>> {
        let k = |s: &str| format!("{arch}.{s}");
        let invalid = |key: &str, why: String| ModelError::InvalidHParam { key: k(key), why };
        let n_expert = meta.opt_u32(&k("expert_count"))?.unwrap_or(0) as usize;
        if n_expert == 0 {
            return Ok(None);
        }
        if n_expert > MAX_EXPERTS {
            return Err(invalid(
                "expert_count",
                format!("{n_expert} experts; at most {MAX_EXPERTS} are supported"),
            ));
        }
        let n_used = meta.opt_u32(&k("expert_used_count"))?.unwrap_or(0) as usize;
        if n_used == 0 || n_used > n_expert || n_used > MAX_EXPERTS_USED {
            return Err(invalid(
                "expert_used_count",
                format!(
                    "{n_used} must be between 1 and the {n_expert} experts (at most {MAX_EXPERTS_USED})"
                ),
            ));
        }
        let n_ff_exp = match meta.opt_u32(&k("expert_feed_forward_length"))? {
            Some(0) | None => n_ff / n_used,
            Some(v) => v as usize,
        };
        if n_ff_exp == 0 || n_ff_exp > 1 << 20 {
            return Err(invalid(
                "expert_feed_forward_length",
                format!("{n_ff_exp} is not a usable width"),
            ));
        }
        let gating = match meta.opt_u32(&k("expert_gating_func"))? {
            None | Some(0) => gating_default,
            Some(1) => ExpertGating::Softmax,
            Some(2) => ExpertGating::Sigmoid,
            Some(3) => ExpertGating::SoftmaxWeight,
            Some(v) => {
                return Err(invalid(
                    "expert_gating_func",
                    format!(
                        "gating function {v} is not supported (1 softmax, 2 sigmoid, 3 softmax over the chosen)"
                    ),
                ));
            }
        };
        // Group-limited routing (DeepSeek-V3, Kimi K2): no key, 0 or 1 group is none.
        let groups = match meta.opt_u32(&k("expert_group_count"))? {
            None | Some(0) | Some(1) => None,
            Some(n_group) => {
                let key = "expert_group_used_count";
                let groups = ExpertGroups {
                    n_group: n_group as usize,
                    n_used: meta.opt_u32(&k(key))?.unwrap_or(0) as usize,
                };
                // A count that fails on its own is the group count's fault, else the used one's.
                let alone = ExpertGroups {
                    n_used: 1,
                    ..groups
                };
                if let Err(why) = alone.check(n_expert, 1) {
                    return Err(invalid("expert_group_count", why));
                }
                if let Err(why) = groups.check(n_expert, n_used) {
                    return Err(invalid(key, why));
                }
                Some(groups)
            }
        };
        let scale = match meta.opt_f32(&k("expert_weights_scale"))? {
            None => 1.0,
            Some(0.0) => 1.0,
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(s) => return Err(invalid("expert_weights_scale", format!("{s}"))),
        };
        Ok(Some(Experts {
            n_expert,
            n_used,
            n_ff_exp,
            n_shared: meta.opt_u32(&k("expert_shared_count"))?.unwrap_or(0) as usize,
            n_leading_dense: meta.opt_u32(&k("leading_dense_block_count"))?.unwrap_or(0) as usize,
            gating,
            norm: meta
                .opt_bool(&k("expert_weights_norm"))?
                .unwrap_or(norm_default),
            scale,
            groups,
        }))
    }

    /// The router's settings.
    pub fn route_params(&self) -> RouteParams {
        RouteParams {
            n_used: self.n_used,
            gating: self.gating,
            norm: self.norm,
            scale: self.scale,
            groups: self.groups,
        }
    }
}

/// One layer's routed feed-forward weights.
pub struct MoeFeedForward {
    /// Pre-FFN norm.
    pub norm: Tensor,
    /// Router `[n_embd, n_expert]`.
    pub router: Tensor,
    /// Stacked gate projections `[n_embd, n_ff_exp, n_expert]`.
    pub gate: Tensor,
    /// Stacked up projections `[n_embd, n_ff_exp, n_expert]`.
    pub up: Tensor,
    /// Stacked down projections `[n_ff_exp, n_embd, n_expert]`.
    pub down: Tensor,
    /// How the router chooses and weighs.
    pub route: RouteParams,
    /// Router bias `[n_expert]` (gpt-oss).
    pub router_bias: Option<Tensor>,
    /// Per-expert biases of the gate, up and down products (`[n, n_expert]`, gpt-oss).
    pub expert_biases: Option<[Tensor; 3]>,
}

impl MoeFeedForward {
    /// Load layer `il`'s `ffn_norm`, `ffn_gate_inp` and `ffn_{gate,up,down}_exps`.
    pub fn load(w: &WeightLoader, hp: &HParams, il: usize, x: &Experts) -> Result<Self> {
        Self::load_with_norm(w, hp, il, x, "ffn_norm")
    }

    /// [`Self::load`] with the pre-FFN norm named `norm` (gpt-oss: `post_attention_norm`),
    /// and the router's and experts' biases where the file has them.
    pub fn load_with_norm(
        w: &WeightLoader,
        hp: &HParams,
        il: usize,
        x: &Experts,
        norm: &str,
    ) -> Result<Self> {
        let (e, f, n) = (hp.n_embd, x.n_ff_exp, x.n_expert);
        let t = |s: &str| layer_tensor(il, s);
        Ok(MoeFeedForward {
            norm: w.norm(&t(norm), e)?,
            router: w.get(&t("ffn_gate_inp"), &[e, n])?,
            gate: w.get(&t("ffn_gate_exps"), &[e, f, n])?,
            up: w.get(&t("ffn_up_exps"), &[e, f, n])?,
            down: w.get(&t("ffn_down_exps"), &[f, e, n])?,
            route: x.route_params(),
            router_bias: w
                .has(&layer_bias(il, "ffn_gate_inp"))
                .then(|| w.norm(&layer_bias(il, "ffn_gate_inp"), n))
                .transpose()?,
            expert_biases: if w.has(&layer_bias(il, "ffn_gate_exps")) {
                Some([
                    w.f32(&layer_bias(il, "ffn_gate_exps"), &[f, n])?,
                    w.f32(&layer_bias(il, "ffn_up_exps"), &[f, n])?,
                    w.f32(&layer_bias(il, "ffn_down_exps"), &[e, n])?,
                ])
            } else {
                None
            },
        })
    }

    /// Record the routed feed-forward of the normalised input `h`: router logits, the choice,
    /// `down(act(gate(h)) ⊙ up(h))` for each chosen expert, and their weighted sum.
    pub fn build(&self, g: &mut GraphBuilder, h: NodeId, act: Gate) -> NodeId {
        self.build_with_bias(g, h, act, None)
    }

    /// [`Self::build`] with a bias on the scores for the choice only (DeepSeek's
    /// `exp_probs_b`).
    pub fn build_with_bias(
        &self,
        g: &mut GraphBuilder,
        h: NodeId,
        act: Gate,
        choice_bias: Option<&Tensor>,
    ) -> NodeId {
        let mut logits = g.mat_mul(&self.router, h);
        if let Some(b) = &self.router_bias {
            logits = g.add_bias(logits, b);
        }
        let route = g.moe_route(logits, self.route, choice_bias);
        let mut gate = g.mat_mul_id(&self.gate, h, route);
        let mut up = g.mat_mul_id(&self.up, h, route);
        if let Some([gb, ub, _]) = &self.expert_biases {
            up = g.add_bias_id(up, ub, route);
            gate = g.add_bias_id(gate, gb, route);
        }
        let a = act.apply(g, gate, up);
        let mut down = g.mat_mul_id(&self.down, a, route);
        if let Some([_, _, db]) = &self.expert_biases {
            down = g.add_bias_id(down, db, route);
        }
        g.moe_sum(down, route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_engine::gguf::{MetaValue, Metadata};

    fn meta(pairs: &[(&str, MetaValue)]) -> Metadata {
        let mut m = Metadata::new();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.clone());
        }
        m
    }

    #[test]
    fn expert_keys_are_read_and_checked() {
        let base = [
            ("m.expert_count", MetaValue::U32(8)),
            ("m.expert_used_count", MetaValue::U32(2)),
        ];
        let x = Experts::read(&meta(&base), "m", 256, true, ExpertGating::Softmax)
            .unwrap()
            .unwrap();
        assert_eq!((x.n_expert, x.n_used, x.n_ff_exp), (8, 2, 128));
        assert!(x.norm && x.scale == 1.0);
        assert!(
            Experts::read(&meta(&[]), "m", 256, true, ExpertGating::Softmax)
                .unwrap()
                .is_none()
        );
        assert_eq!(x.groups, None);
        let mut grouped = base.to_vec();
        grouped.push(("m.expert_group_count", MetaValue::U32(4)));
        grouped.push(("m.expert_group_used_count", MetaValue::U32(2)));
        let x = Experts::read(&meta(&grouped), "m", 256, true, ExpertGating::Sigmoid)
            .unwrap()
            .unwrap();
        let want = ExpertGroups {
            n_group: 4,
            n_used: 2,
        };
        assert_eq!(
            (x.groups, x.route_params().groups),
            (Some(want), Some(want))
        );
        for bad in [
            ("m.expert_group_count", MetaValue::U32(3)),
            ("m.expert_group_used_count", MetaValue::U32(4)),
            ("m.expert_group_used_count", MetaValue::U32(0)),
        ] {
            let mut pairs = grouped.clone();
            pairs.retain(|(k, _)| *k != bad.0);
            pairs.push(bad.clone());
            let e = Experts::read(&meta(&pairs), "m", 256, true, ExpertGating::Softmax)
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad.0), "{e}");
        }
        for bad in [
            ("m.expert_used_count", MetaValue::U32(9)),
            ("m.expert_group_count", MetaValue::U32(8)),
            ("m.expert_gating_func", MetaValue::U32(7)),
            ("m.expert_weights_scale", MetaValue::F32(f32::NAN)),
        ] {
            let mut pairs = base.to_vec();
            pairs.retain(|(k, _)| *k != bad.0);
            pairs.push(bad.clone());
            let e = Experts::read(&meta(&pairs), "m", 256, true, ExpertGating::Softmax)
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad.0), "{e}");
        }
    }
}
