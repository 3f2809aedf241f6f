//! The GPU executor: runs a planned [`Graph`] — the same graphs the CPU backend runs — as a
//! list of compute dispatches recorded into one command encoder per step. Everything a step
//! needs is created when the graph is prepared (pipelines, the arena, the uniform parameters of
//! every dispatch, the step buffer, the readback buffer), so a decode step creates no buffers:
//! it writes the token ids, positions, RoPE tables and attention scan ranges into the step
//! buffer, records the dispatches, and reads back only the output node.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::device::{GpuDevice, GpuError};
use super::kv::GpuKvStore;
use super::shaders::{Kernel, decoder};
use super::weights::GpuWeight;
use crate::DType;
use crate::cpu::ops::rope;
use crate::graph::{Graph, NodeId, Op, Plan, RopeMode, RopeParams};

/// Token counts up to this use the mat-vec kernel.
const MATVEC_MAX_TOKENS: usize = 8;
/// Token counts up to this use the split-K attention kernel.
const DECODE_MAX_TOKENS: usize = 4;
/// Most workgroups per head of the split-K attention kernel (the partials are sized for it).
const ATTN_SPLITS: u32 = 16;
/// Sources per split-K workgroup before another split is used.
const ATTN_SPLIT_SOURCES: u32 = 256;
/// Largest head width the attention kernels take.
const MAX_HEAD_DIM: usize = 256;
/// Largest workgroup count along one dispatch dimension.
const MAX_GROUPS: u32 = 65535;

/// What one binding of a dispatch refers to, resolved to a buffer when the bind groups are
/// made.
#[derive(Clone, Copy, Debug)]
enum Bind {
    Arena,
    Weight(u32, u32),
    NoWeight,
    Step,
    Uniform,
    KvK(u32),
    KvV(u32),
    KvPos(u32),
    Partials,
}

/// One kernel launch.
struct Dispatch {
    kernel: Kernel,
    binds: Vec<Bind>,
    /// Byte offset and size of its parameters in the uniform buffer.
    uniform: (u64, u64),
    groups: [u32; 3],
    /// The graph node it computes (part of).
    node: usize,
    /// For split-K attention: the step-buffer offset of the scan info whose split count
    /// replaces `groups[0]` each step.
    splits_from: Option<usize>,
}

/// Where a step's per-step values go in the step buffer (in u32 words).
#[derive(Default)]
struct StepLayout {
    tokens: usize,
    positions: usize,
    /// RoPE tables, one per distinct parameter set, `n_tokens × n_dims` each.
    ropes: Vec<(RopeParams, usize)>,
    /// Per attention node: KV store, window and the offset of `[lo, n_scan, n_cells]`.
    attention: Vec<(u32, Option<u32>, usize)>,
    /// KV stores the step writes.
    writes: Vec<u32>,
    len: usize,
}

/// A graph made ready for the GPU: its dispatches, buffers and host-side staging.
pub struct GpuPreparedGraph {
    graph: Graph,
    plan: Plan,
    weights: Vec<Arc<GpuWeight>>,
    dispatches: Vec<Dispatch>,
    arena: wgpu::Buffer,
    uniforms: wgpu::Buffer,
    step: wgpu::Buffer,
    partials: wgpu::Buffer,
    readback: wgpu::Buffer,
    layout: StepLayout,
    step_host: Vec<u32>,
    out_range: (u64, usize),
    out_host: Vec<f32>,
    /// KV store ids the bind groups were made with, and the bind groups.
    bound: Option<(Vec<u64>, Vec<wgpu::BindGroup>)>,
}

impl GpuPreparedGraph {
    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Kernel launches per step.
    pub fn n_dispatches(&self) -> usize {
        self.dispatches.len()
    }

    /// Bytes of the activation arena.
    pub fn arena_bytes(&self) -> u64 {
        self.arena.size()
    }

    /// The whole arena read back (for tests looking for out-of-bounds writes).
    pub fn read_arena(&self, dev: &GpuDevice) -> Result<Vec<f32>, GpuError> {
        read_buffer(dev, &self.arena)
    }

    /// Fill the whole arena with `value` (tests use a sentinel).
    pub fn fill_arena(&self, dev: &GpuDevice, value: f32) {
        let words = vec![value; (self.arena.size() / 4) as usize];
        dev.queue
            .write_buffer(&self.arena, 0, bytemuck::cast_slice(&words));
    }

    /// The arena range `[start, end)` (f32 elements) of node `id`'s output.
    pub fn node_range(&self, id: NodeId) -> std::ops::Range<usize> {
        let n = self.graph.node(id);
        self.plan.range(id, n.rows * n.cols)
    }
}

/// Copy a whole storage buffer back to the host.
fn read_buffer(dev: &GpuDevice, buf: &wgpu::Buffer) -> Result<Vec<f32>, GpuError> {
    let staging = dev.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: buf.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = dev.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buf, 0, &staging, 0, buf.size());
    dev.queue.submit([enc.finish()]);
    let mut out = vec![0.0f32; (buf.size() / 4) as usize];
    map_read(dev, &staging, buf.size(), &mut out)?;
    Ok(out)
}

/// Map `size` bytes of `buf` (a MAP_READ buffer whose copy has been submitted), copy them to
/// `out` and unmap.
fn map_read(
    dev: &GpuDevice,
    buf: &wgpu::Buffer,
    size: u64,
    out: &mut [f32],
) -> Result<(), GpuError> {
    let slice = buf.slice(..size);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    dev.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| GpuError::Device(e.to_string()))?;
    dev.check()?;
    {
        let view = slice
            .get_mapped_range()
            .map_err(|e| GpuError::Device(e.to_string()))?;
        out.copy_from_slice(bytemuck::cast_slice(&view[..]));
    }
    buf.unmap();
    Ok(())
}

/// Runs graphs on one GPU, caching pipelines and uploaded weights across graphs.
pub struct GpuExecutor {
    dev: Arc<GpuDevice>,
    pipelines: HashMap<Kernel, wgpu::ComputePipeline>,
    /// This executor's uploads by the address and length of their bytes (each upload keeps
    /// its tensor alive, so the key cannot be reused meanwhile); shared with the other
    /// executors on the device through [`GpuDevice::shared_weight`].
    weights: HashMap<(usize, usize), Arc<GpuWeight>>,
    dummy: wgpu::Buffer,
    /// Print every node's sum to stderr (`TESSERA_TRACE=1`), as the CPU executor does.
    trace: bool,
    /// Invocations per mat-vec row: 1 (the barrier-free kernel) on software rasterisers
    /// (lavapipe), where workgroup barriers are expensive, 16 (or the subgroup width) on GPUs.
    matvec_tpr: u32,
}

/// Split `n` workgroups over x and y within the per-dimension limit; returns `[x, y, 1]`.
fn grid(n: u32) -> [u32; 3] {
    let x = n.clamp(1, MAX_GROUPS);
    [x, n.div_ceil(x).max(1), 1]
}

fn f(x: f32) -> u32 {
    x.to_bits()
}

impl GpuExecutor {
    /// Use `n` invocations per row in the mat-vec kernel of graphs prepared from now on
    /// (1, 2, 4, 8, 16, 32 or 64; 1 selects the barrier-free kernel). The default suits the
    /// adapter; the parity tests use this to run both kernels on any adapter.
    pub fn set_matvec_invocations_per_row(&mut self, n: u32) -> Result<(), GpuError> {
        if !n.is_power_of_two() || n > 64 {
            return Err(GpuError::Unsupported(format!(
                "{n} invocations per mat-vec row (1, 2, 4, … 64)"
            )));
        }
        self.matvec_tpr = n;
        Ok(())
    }

    /// An executor on `dev`.
    pub fn new(dev: Arc<GpuDevice>) -> GpuExecutor {
        // One invocation a row on software rasterisers; on GPUs 16, or the subgroup width
        // where narrower, so that subgroup shuffles can sum the rows.
        let matvec_tpr = if dev.report.device_type == "Cpu" {
            1
        } else if dev.subgroups && dev.report.subgroup_size.0 >= 4 {
            dev.report.subgroup_size.0.min(16).next_power_of_two()
        } else {
            16
        };
        let dummy = dev.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        GpuExecutor {
            dev,
            pipelines: HashMap::new(),
            weights: HashMap::new(),
            dummy,
            trace: std::env::var_os("TESSERA_TRACE").is_some(),
            matvec_tpr,
        }
    }

    /// The device.
    pub fn device(&self) -> &Arc<GpuDevice> {
        &self.dev
    }

    /// Bytes of weights uploaded so far.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.values().map(|w| w.bytes()).sum()
    }

    fn pipeline(&mut self, k: Kernel) -> &wgpu::ComputePipeline {
        let dev = &self.dev;
        self.pipelines.entry(k).or_insert_with(|| {
            let src = k.source();
            let module = dev
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(&k.label()),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                });
            dev.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&k.label()),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })
    }

    fn upload(&mut self, t: &crate::Tensor) -> Result<Arc<GpuWeight>, GpuError> {
        let key = super::weights::weight_key(t);
        if let Some(w) = self.weights.get(&key) {
            return Ok(w.clone());
        }
        let w = self.dev.shared_weight(t)?;
        self.weights.insert(key, w.clone());
        Ok(w)
    }

    /// Plan `graph`, upload its weights (once per tensor across graphs), compile its kernels
    /// and lay out every dispatch's parameters.
    pub fn prepare(&mut self, graph: Graph) -> Result<GpuPreparedGraph, GpuError> {
        let plan = Plan::new(&graph);
        let max = self.dev.max_binding();
        let arena_bytes = (plan.arena_len as u64 * 4).max(16);
        if arena_bytes > max {
            return Err(GpuError::Unsupported(format!(
                "a step of {} tokens needs {} MiB of activations, over the adapter's {} MiB \
                 binding limit (use a smaller batch)",
                graph.n_tokens,
                arena_bytes >> 20,
                max >> 20
            )));
        }
        let mut weights = Vec::with_capacity(graph.weights.len());
        for t in &graph.weights {
            weights.push(self.upload(t)?);
        }
        let n_tok = graph.n_tokens;
        let mut layout = StepLayout {
            tokens: 0,
            positions: n_tok,
            len: 2 * n_tok,
            ..Default::default()
        };
        let off = |id: NodeId| plan.offsets[id.0 as usize] as u32;
        let align = self.dev.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let mut uniform_words: Vec<u32> = Vec::new();
        let mut dispatches = Vec::new();
        let mut partial_len = 4usize;
        let tpr = self.matvec_tpr;
        // Row sums by subgroup shuffles where a subgroup holds whole rows.
        let matvec_subgroups =
            tpr > 1 && self.dev.subgroups && tpr <= self.dev.report.subgroup_size.0;
        let current_node = std::cell::Cell::new(0usize);
        let mut push = |kernel: Kernel, binds: Vec<Bind>, params: &[u32], groups: [u32; 3]| {
            let start = uniform_words.len() * 4;
            let size = params.len().div_ceil(4) * 16;
            uniform_words.extend_from_slice(params);
            let end = (start + size).div_ceil(align) * align;
            uniform_words.resize(end / 4, 0);
            dispatches.push(Dispatch {
                kernel,
                binds,
                uniform: (start as u64, size as u64),
                groups,
                splits_from: None,
                node: current_node.get(),
            });
            dispatches.len() - 1
        };
        // (dispatch, scan info) of the split-K attention dispatches.
        let mut split_fixups: Vec<(usize, usize)> = Vec::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            current_node.set(i);
            let out = plan.offsets[i] as u32;
            match node.op {
                Op::GetRows { table } => {
                    let w = &weights[table.0 as usize];
                    check_decoder(&graph, table.0 as usize)?;
                    if node.cols % 32 != 0 {
                        return Err(GpuError::Unsupported(format!(
                            "get_rows with rows of {} values (the kernel takes multiples of 32)",
                            node.cols
                        )));
                    }
                    for (c, chunk) in w.chunks.iter().enumerate() {
                        let p = [
                            out,
                            node.cols as u32,
                            w.row_bytes as u32,
                            chunk.row0 as u32,
                            chunk.n_rows as u32,
                            layout.tokens as u32,
                            n_tok as u32,
                        ];
                        push(
                            Kernel::GetRows(w.dtype),
                            vec![
                                Bind::Arena,
                                Bind::Weight(table.0, c as u32),
                                Bind::Step,
                                Bind::Uniform,
                            ],
                            &p,
                            [(node.cols as u32 / 32).div_ceil(64), n_tok as u32, 1],
                        );
                    }
                }
                Op::RmsNorm {
                    x,
                    weight,
                    group,
                    eps,
                } => {
                    let n_groups = (node.rows * node.cols / group) as u32;
                    let g = grid(n_groups);
                    let wb = match weight {
                        Some(w) => {
                            let t = graph.weight(w);
                            if t.dtype() != DType::F32 || t.n_elements() != group {
                                return Err(GpuError::Unsupported(format!(
                                    "norm weight {:?} must be {group} F32 values",
                                    t.name()
                                )));
                            }
                            Bind::Weight(w.0, 0)
                        }
                        None => Bind::NoWeight,
                    };
                    let p = [
                        off(x),
                        out,
                        group as u32,
                        n_groups,
                        f(eps),
                        weight.is_some() as u32,
                        g[0],
                    ];
                    push(Kernel::RmsNorm, vec![Bind::Arena, wb, Bind::Uniform], &p, g);
                }
                Op::Add { a, b }
                | Op::Mul { a, b }
                | Op::SwiGlu { gate: a, up: b }
                | Op::GeGlu { gate: a, up: b } => {
                    let code = match node.op {
                        Op::Add { .. } => 0,
                        Op::Mul { .. } => 1,
                        Op::SwiGlu { .. } => 3,
                        _ => 4,
                    };
                    let n = (node.rows * node.cols) as u32;
                    let g = grid(n.div_ceil(256));
                    let p = [off(a), off(b), out, n, code, 0, g[0]];
                    push(Kernel::Elementwise, vec![Bind::Arena, Bind::Uniform], &p, g);
                }
                Op::Scale { x, s } => {
                    let n = (node.rows * node.cols) as u32;
                    let g = grid(n.div_ceil(256));
                    let p = [off(x), 0, out, n, 2, f(s), g[0]];
                    push(Kernel::Elementwise, vec![Bind::Arena, Bind::Uniform], &p, g);
                }
                Op::LastRow { x } => {
                    let xn = graph.node(x);
                    let n = node.cols as u32;
                    let g = grid(n.div_ceil(256));
                    let src = off(x) + ((xn.rows - 1) * xn.cols) as u32;
                    let p = [src, 0, out, n, 5, 0, g[0]];
                    push(Kernel::Elementwise, vec![Bind::Arena, Bind::Uniform], &p, g);
                }
                Op::MatMul { w: wid, x } => {
                    check_decoder(&graph, wid.0 as usize)?;
                    let w = &weights[wid.0 as usize];
                    let xn = graph.node(x);
                    let (rows, n_in) = (xn.rows, xn.cols);
                    if n_in % 32 != 0 {
                        return Err(GpuError::Unsupported(format!(
                            "mat_mul with rows of {n_in} values (the kernels take multiples of 32)"
                        )));
                    }
                    for (c, chunk) in w.chunks.iter().enumerate() {
                        let decode = rows <= MATVEC_MAX_TOKENS;
                        let g = if decode {
                            grid((chunk.n_rows as u32).div_ceil(64 / tpr))
                        } else {
                            [
                                (chunk.n_rows as u32).div_ceil(64),
                                (rows as u32).div_ceil(64),
                                1,
                            ]
                        };
                        let p = [
                            off(x),
                            out,
                            n_in as u32,
                            chunk.n_rows as u32,
                            w.row_bytes as u32,
                            node.cols as u32,
                            chunk.row0 as u32,
                            rows as u32,
                            g[0],
                        ];
                        let k = if decode {
                            Kernel::MatVec(w.dtype, tpr, matvec_subgroups)
                        } else {
                            Kernel::MatMul(w.dtype)
                        };
                        push(
                            k,
                            vec![Bind::Arena, Bind::Weight(wid.0, c as u32), Bind::Uniform],
                            &p,
                            g,
                        );
                    }
                }
                Op::Rope {
                    x,
                    head_dim,
                    params,
                } => {
                    let table = match layout.ropes.iter().find(|(p, _)| *p == params) {
                        Some(&(_, o)) => o,
                        None => {
                            let o = layout.len;
                            layout.ropes.push((params, o));
                            layout.len += n_tok * params.n_dims;
                            o
                        }
                    };
                    let n = (node.rows * node.cols) as u32;
                    let g = grid(n.div_ceil(256));
                    let p = [
                        off(x),
                        out,
                        node.rows as u32,
                        node.cols as u32,
                        head_dim as u32,
                        params.n_dims as u32,
                        (params.mode == RopeMode::Neox) as u32,
                        table as u32,
                        g[0],
                    ];
                    push(
                        Kernel::Rope,
                        vec![Bind::Arena, Bind::Step, Bind::Uniform],
                        &p,
                        g,
                    );
                }
                Op::Attention {
                    q,
                    k,
                    v,
                    kv,
                    params: a,
                } => {
                    let (dk, dv) = (a.head_dim, a.head_dim_v);
                    if dk > MAX_HEAD_DIM
                        || dv > MAX_HEAD_DIM
                        || dk % 8 != 0
                        || dv % 8 != 0
                        || a.n_head_kv == 0
                        || a.n_head % a.n_head_kv != 0
                    {
                        return Err(GpuError::Unsupported(format!(
                            "attention with head widths {dk}/{dv} and {}/{} heads (widths up to \
                             {MAX_HEAD_DIM}, multiples of 8)",
                            a.n_head, a.n_head_kv
                        )));
                    }
                    let info = layout.len;
                    layout.len += 4;
                    layout.attention.push((kv.0, a.window, info));
                    layout.writes.push(kv.0);
                    let decode = n_tok <= DECODE_MAX_TOKENS;
                    let p = [
                        off(q),
                        off(k),
                        off(v),
                        out,
                        n_tok as u32,
                        a.n_head as u32,
                        a.n_head_kv as u32,
                        dk as u32,
                        dv as u32,
                        f(a.scale),
                        a.window.unwrap_or(0),
                        f(a.softcap.unwrap_or(0.0)),
                        0,
                        layout.positions as u32,
                        info as u32,
                        ATTN_SPLITS,
                    ];
                    let kvb = [
                        Bind::Arena,
                        Bind::KvK(kv.0),
                        Bind::KvV(kv.0),
                        Bind::KvPos(kv.0),
                        Bind::Step,
                        Bind::Uniform,
                    ];
                    if decode {
                        let mut b = kvb.to_vec();
                        b.push(Bind::Partials);
                        let d = push(
                            Kernel::AttnDecode,
                            b,
                            &p,
                            [ATTN_SPLITS, a.n_head as u32, n_tok as u32],
                        );
                        split_fixups.push((d, info));
                        partial_len =
                            partial_len.max(n_tok * a.n_head * ATTN_SPLITS as usize * (dv + 2));
                        let pr = [out, a.n_head as u32, dv as u32, info as u32];
                        push(
                            Kernel::AttnReduce,
                            vec![Bind::Arena, Bind::Partials, Bind::Step, Bind::Uniform],
                            &pr,
                            [a.n_head as u32, n_tok as u32, 1],
                        );
                    } else {
                        push(
                            Kernel::AttnPrefill,
                            kvb.to_vec(),
                            &p,
                            [(n_tok as u32).div_ceil(8), a.n_head as u32, 1],
                        );
                    }
                    let (kw, vw) = (a.n_head_kv * dk, a.n_head_kv * dv);
                    let pw = [
                        off(k),
                        off(v),
                        kw as u32,
                        vw as u32,
                        n_tok as u32,
                        info as u32,
                        layout.positions as u32,
                    ];
                    push(
                        Kernel::KvWrite,
                        kvb.to_vec(),
                        &pw,
                        [(kw.max(vw) as u32 / 2).div_ceil(64), n_tok as u32, 1],
                    );
                }
            }
        }
        for (d, info) in split_fixups {
            dispatches[d].splits_from = Some(info);
        }
        for d in &dispatches {
            self.pipeline(d.kernel);
        }
        let dev = &self.dev.device;
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let arena = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("arena"),
            size: arena_bytes,
            usage: storage | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        if uniform_words.is_empty() {
            uniform_words.resize(4, 0);
        }
        let uniforms = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&uniform_words),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let step = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step"),
            size: (layout.len as u64 * 4).max(16),
            usage: storage,
            mapped_at_creation: false,
        });
        let partials = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("attention partials"),
            size: partial_len as u64 * 4,
            usage: storage,
            mapped_at_creation: false,
        });
        let out_node = graph.node(graph.output);
        let out_len = out_node.rows * out_node.cols;
        let out_start = plan.offsets[graph.output.0 as usize] as u64 * 4;
        let readback = dev.create_buffer(&wgpu::BufferDescriptor {
            label: Some("output"),
            size: (out_len as u64 * 4).max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.dev.check()?;
        Ok(GpuPreparedGraph {
            step_host: vec![0; layout.len],
            graph,
            plan,
            weights,
            dispatches,
            arena,
            uniforms,
            step,
            partials,
            readback,
            layout,
            out_range: (out_start, out_len),
            out_host: vec![0.0; out_len],
            bound: None,
        })
    }

    fn bind_groups(&self, g: &GpuPreparedGraph, kv: &[GpuKvStore]) -> Vec<wgpu::BindGroup> {
        g.dispatches
            .iter()
            .map(|d| {
                let pipeline = &self.pipelines[&d.kernel];
                let entries: Vec<wgpu::BindGroupEntry> = d
                    .binds
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let resource = match *b {
                            Bind::Arena => g.arena.as_entire_binding(),
                            Bind::Weight(w, c) => g.weights[w as usize].chunks[c as usize]
                                .buffer
                                .as_entire_binding(),
                            Bind::NoWeight => self.dummy.as_entire_binding(),
                            Bind::Step => g.step.as_entire_binding(),
                            Bind::Partials => g.partials.as_entire_binding(),
                            Bind::KvK(s) => kv[s as usize].k.as_entire_binding(),
                            Bind::KvV(s) => kv[s as usize].v.as_entire_binding(),
                            Bind::KvPos(s) => kv[s as usize].cell_pos.as_entire_binding(),
                            Bind::Uniform => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &g.uniforms,
                                offset: d.uniform.0,
                                size: NonZeroU64::new(d.uniform.1),
                            }),
                        };
                        wgpu::BindGroupEntry {
                            binding: i as u32,
                            resource,
                        }
                    })
                    .collect();
                self.dev
                    .device
                    .create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(&d.kernel.label()),
                        layout: &pipeline.get_bind_group_layout(0),
                        entries: &entries,
                    })
            })
            .collect()
    }

    /// Run one step: `tokens` at `positions` (increasing), reading and extending the KV
    /// stores. Returns the output node's values.
    pub fn run<'g>(
        &mut self,
        g: &'g mut GpuPreparedGraph,
        tokens: &[u32],
        positions: &[i32],
        kv: &mut [GpuKvStore],
    ) -> Result<&'g [f32], GpuError> {
        let n_tok = g.graph.n_tokens;
        if tokens.len() != n_tok || positions.len() != n_tok {
            return Err(GpuError::Unsupported(format!(
                "the graph takes {n_tok} tokens, the step has {} tokens and {} positions",
                tokens.len(),
                positions.len()
            )));
        }
        if positions[0] < 0 || positions.windows(2).any(|w| w[1] <= w[0]) {
            return Err(GpuError::Unsupported(
                "positions must be non-negative and increasing".into(),
            ));
        }
        for node in &g.graph.nodes {
            match node.op {
                Op::GetRows { table } => {
                    let n_vocab = g.graph.weight(table).n_rows();
                    if let Some(&id) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
                        return Err(GpuError::Unsupported(format!(
                            "token id {id} is out of range (vocabulary of {n_vocab})"
                        )));
                    }
                }
                Op::Attention { kv: id, params, .. } => {
                    let Some(s) = kv.get(id.0 as usize) else {
                        return Err(GpuError::Unsupported(format!(
                            "the graph uses KV store {}, but only {} were passed",
                            id.0,
                            kv.len()
                        )));
                    };
                    if s.k_width() != params.n_head_kv * params.head_dim
                        || s.v_width() != params.n_head_kv * params.head_dim_v
                    {
                        return Err(GpuError::Unsupported(format!(
                            "KV store {} has widths {}/{}, the layer needs {}/{}",
                            id.0,
                            s.k_width(),
                            s.v_width(),
                            params.n_head_kv * params.head_dim,
                            params.n_head_kv * params.head_dim_v
                        )));
                    }
                }
                _ => {}
            }
        }
        // The step's values.
        let l = &g.layout;
        let sh = &mut g.step_host;
        sh[l.tokens..l.tokens + n_tok].copy_from_slice(tokens);
        for (t, &p) in positions.iter().enumerate() {
            sh[l.positions + t] = p as u32;
        }
        for (params, o) in &l.ropes {
            let nd = params.n_dims;
            let mut table = [0f32; 2 * MAX_HEAD_DIM];
            for (t, &pos) in positions.iter().enumerate() {
                rope::rope_table(pos, params, &mut table[..nd]);
                for (d, v) in table[..nd].iter().enumerate() {
                    sh[o + t * nd + d] = v.to_bits();
                }
            }
        }
        for &(s, window, o) in &l.attention {
            let store = &kv[s as usize];
            let (lo, n) = store.scan_range(positions[0], window);
            sh[o] = lo;
            sh[o + 1] = n;
            sh[o + 2] = store.n_cells() as u32;
            sh[o + 3] = (n + n_tok as u32)
                .div_ceil(ATTN_SPLIT_SOURCES)
                .clamp(1, ATTN_SPLITS);
        }
        self.dev
            .queue
            .write_buffer(&g.step, 0, bytemuck::cast_slice(&g.step_host));
        // Bind groups, made again only when other KV stores are passed.
        let ids: Vec<u64> = kv.iter().map(|s| s.id).collect();
        if g.bound.as_ref().is_none_or(|(b, _)| *b != ids) {
            let groups = self.bind_groups(g, kv);
            g.bound = Some((ids, groups));
        }
        let groups = &g.bound.as_ref().expect("just made").1;
        if self.trace {
            self.trace_step(g)?;
        }
        let mut enc = self
            .dev
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            for (d, bg) in g.dispatches.iter().zip(groups) {
                pass.set_pipeline(&self.pipelines[&d.kernel]);
                pass.set_bind_group(0, bg, &[]);
                let x = match d.splits_from {
                    Some(o) => g.step_host[o + 3],
                    None => d.groups[0],
                };
                pass.dispatch_workgroups(x, d.groups[1], d.groups[2]);
            }
        }
        let bytes = g.out_range.1 as u64 * 4;
        enc.copy_buffer_to_buffer(&g.arena, g.out_range.0, &g.readback, 0, bytes);
        self.dev.queue.submit([enc.finish()]);
        map_read(&self.dev, &g.readback, bytes, &mut g.out_host)?;
        for &s in &g.layout.writes {
            for &p in positions {
                kv[s as usize].note_written(p);
            }
        }
        Ok(&g.out_host)
    }
}

impl GpuExecutor {
    /// Run the step node by node, printing each node's sum and first values (slow: one
    /// submission and readback per node). The KV writes happen here too, so the normal run
    /// that follows recomputes the step over an already-written cache: only for debugging.
    fn trace_step(&self, g: &GpuPreparedGraph) -> Result<(), GpuError> {
        let groups = &g.bound.as_ref().expect("made before").1;
        let mut d = 0;
        for (i, node) in g.graph.nodes.iter().enumerate() {
            let t0 = std::time::Instant::now();
            let mut enc = self.dev.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                while d < g.dispatches.len() && g.dispatches[d].node == i {
                    let disp = &g.dispatches[d];
                    pass.set_pipeline(&self.pipelines[&disp.kernel]);
                    pass.set_bind_group(0, &groups[d], &[]);
                    let x = match disp.splits_from {
                        Some(o) => g.step_host[o + 3],
                        None => disp.groups[0],
                    };
                    pass.dispatch_workgroups(x, disp.groups[1], disp.groups[2]);
                    d += 1;
                }
            }
            self.dev.queue.submit([enc.finish()]);
            self.dev
                .device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| GpuError::Device(e.to_string()))?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let arena = read_buffer(&self.dev, &g.arena)?;
            let v = &arena[g.node_range(NodeId(i as u32))];
            eprintln!("{} {ms:.3} ms", node.trace_line(v));
        }
        Ok(())
    }
}

fn check_decoder(graph: &Graph, w: usize) -> Result<(), GpuError> {
    let t = &graph.weights[w];
    if decoder(t.dtype()).is_none() {
        return Err(GpuError::UnsupportedDType {
            name: t.name().into(),
            dtype: t.dtype(),
        });
    }
    Ok(())
}
