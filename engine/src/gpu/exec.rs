//! The GPU executor: runs a planned [`Graph`] — the same graphs the CPU backend runs — as a
//! list of compute dispatches recorded into one command encoder per step. Everything a step
//! needs is created when the graph is prepared (pipelines, the uniform parameters of every
//! dispatch, the step buffer, the readback buffer; the activation arena and attention partials,
//! which all of an executor's graphs share, grown to the largest), so a decode step creates no
//! buffers: it writes the token ids, positions, RoPE tables and attention scan infos into the
//! step buffer, records the dispatches, and reads back only the output node.
//!
//! A step may mix sequences ([`Step::groups`]): every op but attention treats the step's rows
//! alike (one weight read for all of them), and attention is dispatched per sequence group,
//! each reading its sequence's cells of the layer's store (one store per layer serves every
//! sequence, [`GpuKvStore`]).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::device::{GpuDevice, GpuError};
use super::encode::{Bind, Dispatch, MatVecChoice, NodeCtx, Recorder, encode_node};
use super::kv::GpuKvStore;
use super::readback::{map_read, read_buffer};
use super::shaders::Kernel;
use super::step::{StepGroup, StepLayout};
use super::weights::GpuWeight;
use crate::backend::Step;
use crate::graph::{Graph, NodeId, Op, Plan};

/// A graph made ready for the GPU: its dispatches, buffers and host-side staging.
pub struct GpuPreparedGraph {
    graph: Graph,
    plan: Plan,
    weights: Vec<Arc<GpuWeight>>,
    dispatches: Vec<Dispatch>,
    /// The executor's shared buffers as of this graph's last step (or its preparation).
    shared: SharedBuffers,
    /// Bytes of the arena this graph uses.
    arena_need: u64,
    uniforms: wgpu::Buffer,
    step: wgpu::Buffer,
    readback: wgpu::Buffer,
    layout: StepLayout,
    step_host: Vec<u32>,
    out_range: (u64, usize),
    out_host: Vec<f32>,
    /// The arena range (f32 elements) where weight products' inputs are rounded.
    scratch: std::ops::Range<usize>,
    /// KV store ids the bind groups were made with, and the bind groups (one per dispatch).
    bound: Option<(Vec<u64>, Vec<wgpu::BindGroup>)>,
    /// This step's sequence groups.
    groups: Vec<StepGroup>,
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

    /// Bytes of the activation arena this graph uses.
    pub fn arena_bytes(&self) -> u64 {
        self.arena_need
    }

    /// The whole (shared) arena read back (for tests looking for out-of-bounds writes).
    pub fn read_arena(&self, dev: &GpuDevice) -> Result<Vec<f32>, GpuError> {
        read_buffer(dev, &self.shared.arena)
    }

    /// Fill the whole (shared) arena with `value` (tests use a sentinel; the next step must be
    /// this graph's, with no other graph prepared in between).
    pub fn fill_arena(&self, dev: &GpuDevice, value: f32) {
        let words = vec![value; (self.shared.arena.size() / 4) as usize];
        dev.queue
            .write_buffer(&self.shared.arena, 0, bytemuck::cast_slice(&words));
    }

    /// The arena range `[start, end)` (f32 elements) where weight products' inputs are rounded
    /// as the CPU quantizes them (empty when no product rounds its input).
    pub fn scratch_range(&self) -> std::ops::Range<usize> {
        self.scratch.clone()
    }

    /// The arena range `[start, end)` (f32 elements) of node `id`'s output.
    pub fn node_range(&self, id: NodeId) -> std::ops::Range<usize> {
        let n = self.graph.node(id);
        self.plan.range(id, n.rows * n.cols)
    }
}

/// The buffers every graph of an executor shares, since one step runs at a time: the
/// activation arena and the split-K attention partials.
#[derive(Clone)]
struct SharedBuffers {
    arena: wgpu::Buffer,
    partials: wgpu::Buffer,
    /// Counts replacements: a graph whose copy is older makes its bind groups again.
    generation: u64,
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
    /// Prompts of at least this many rows run mat_mul_id grouped by expert
    /// (`matmul_id.wgsl`), fewer one mat-vec per (token, slot) pair.
    moe_grouped_min_rows: usize,
    /// Most sequences one step may mix (graphs prepared from now on).
    max_sequences: usize,
    /// The arena and partials, once a graph is prepared.
    shared: Option<SharedBuffers>,
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

    /// Run mat_mul_id grouped by expert (one tiled product over each expert's (token, slot)
    /// entries) for graphs of at least `n` rows prepared from now on, one mat-vec per pair
    /// below (`usize::MAX`: never grouped). The default is
    /// 8 rows (measured on lavapipe); the parity tests use this to run both paths.
    pub fn set_moe_grouped_min_rows(&mut self, n: usize) {
        self.moe_grouped_min_rows = n;
    }

    /// Let steps of graphs prepared from now on mix up to `n` sequences (1 by default):
    /// each attention node is recorded once per sequence group.
    pub fn set_max_sequences(&mut self, n: usize) {
        self.max_sequences = n.max(1);
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
            moe_grouped_min_rows: super::encode::MOE_GROUPED_MIN_ROWS,
            max_sequences: 1,
            shared: None,
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

    /// Record the dispatches of every node of `graph`, each by its op's encoder.
    fn encode(
        &self,
        graph: &Graph,
        plan: &Plan,
        weights: &[Arc<GpuWeight>],
    ) -> Result<Recorder, GpuError> {
        let align = self.dev.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let n_groups = self.max_sequences.min(graph.n_tokens.max(1));
        let mut rec = Recorder::new(graph.n_tokens, n_groups, align, plan.arena_len);
        let tpr = self.matvec_tpr;
        let matvec = MatVecChoice {
            tpr,
            // Row sums by subgroup shuffles where a subgroup holds whole rows.
            subgroups: tpr > 1 && self.dev.subgroups && tpr <= self.dev.report.subgroup_size.0,
            grouped_min_rows: self.moe_grouped_min_rows,
        };
        for (i, node) in graph.nodes.iter().enumerate() {
            let ctx = NodeCtx {
                graph,
                plan,
                weights,
                node,
                out: plan.offsets[i] as u32,
                matvec,
            };
            encode_node(&ctx, i, &mut rec)?;
        }
        Ok(rec)
    }

    /// Plan `graph`, upload its weights (once per tensor across graphs), compile its kernels
    /// and lay out every dispatch's parameters.
    pub fn prepare(&mut self, graph: Graph) -> Result<GpuPreparedGraph, GpuError> {
        let plan = Plan::new(&graph);
        let mut weights = Vec::with_capacity(graph.weights.len());
        for t in &graph.weights {
            weights.push(self.upload(t)?);
        }
        let rec = self.encode(&graph, &plan, &weights)?;
        // The nodes, then the rounded-input scratch region where a product uses it.
        let scratch = rec.scratch.off as usize..rec.scratch.off as usize + rec.scratch.len;
        let arena_len = if scratch.is_empty() {
            plan.arena_len
        } else {
            scratch.end
        };
        let max = self.dev.max_binding();
        let arena_bytes = (arena_len as u64 * 4).max(16);
        if arena_bytes > max {
            return Err(GpuError::Unsupported(format!(
                "a step of {} tokens needs {} MiB of activations, over the adapter's {} MiB \
                 binding limit (use a smaller batch)",
                graph.n_tokens,
                arena_bytes >> 20,
                max >> 20
            )));
        }
        for d in &rec.dispatches {
            self.pipeline(d.kernel);
        }
        let Recorder {
            uniform_words,
            dispatches,
            layout,
            partial_len,
            ..
        } = rec;
        let dev = &self.dev.device;
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let buffer = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let uniforms = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(if uniform_words.is_empty() {
                &[0u32; 4][..]
            } else {
                &uniform_words[..]
            }),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let step = buffer("step", (layout.len as u64 * 4).max(16), storage);
        let out_node = graph.node(graph.output);
        let out_len = out_node.rows * out_node.cols;
        let out_start = plan.offsets[graph.output.0 as usize] as u64 * 4;
        let readback = buffer(
            "output",
            (out_len as u64 * 4).max(4),
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let shared = self.shared_buffers(arena_bytes, partial_len as u64 * 4);
        self.dev.check()?;
        Ok(GpuPreparedGraph {
            step_host: vec![0; layout.len],
            graph,
            plan,
            weights,
            dispatches,
            shared,
            arena_need: arena_bytes,
            uniforms,
            step,
            readback,
            layout,
            out_range: (out_start, out_len),
            out_host: vec![0.0; out_len],
            scratch,
            bound: None,
            groups: Vec::new(),
        })
    }

    /// The shared buffers, each replaced by a larger one where a graph needs `arena` or
    /// `partials` bytes that it lacks (at least doubling, within the binding limit, so that the
    /// graphs still holding older ones hold less than the current ones in all).
    fn shared_buffers(&mut self, arena: u64, partials: u64) -> SharedBuffers {
        let max = self.dev.max_binding();
        let dev = &self.dev.device;
        let old = self.shared.as_ref();
        let sized = |b: Option<&wgpu::Buffer>, need: u64, label: &str, copy_src: bool| match b {
            Some(b) if b.size() >= need => (b.clone(), false),
            _ => {
                let size = b.map_or(0, |b| b.size());
                let mut usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
                if copy_src {
                    usage |= wgpu::BufferUsages::COPY_SRC;
                }
                let buffer = dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: need.max((2 * size).min(max)),
                    usage,
                    mapped_at_creation: false,
                });
                (buffer, true)
            }
        };
        let (arena, new_arena) = sized(old.map(|s| &s.arena), arena, "arena", true);
        let (partials, new_partials) = sized(
            old.map(|s| &s.partials),
            partials,
            "attention partials",
            false,
        );
        let generation = match old {
            Some(s) if !new_arena && !new_partials => s.generation,
            Some(s) => s.generation + 1,
            None => 0,
        };
        let shared = SharedBuffers {
            arena,
            partials,
            generation,
        };
        self.shared = Some(shared.clone());
        shared
    }

    /// The bind group of dispatch `d` of `g` with its KV bindings on `stores` (one slot's).
    fn bind_group(
        &self,
        g: &GpuPreparedGraph,
        d: &Dispatch,
        stores: &[GpuKvStore],
    ) -> wgpu::BindGroup {
        let pipeline = &self.pipelines[&d.kernel];
        let entries: Vec<wgpu::BindGroupEntry> = d
            .binds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let resource = match *b {
                    Bind::Arena => g.shared.arena.as_entire_binding(),
                    Bind::Weight(w, c) => g.weights[w as usize].chunks[c as usize]
                        .buffer
                        .as_entire_binding(),
                    Bind::NoWeight => self.dummy.as_entire_binding(),
                    Bind::Step => g.step.as_entire_binding(),
                    Bind::Partials => g.shared.partials.as_entire_binding(),
                    Bind::KvK(s) => stores[s as usize].k.as_entire_binding(),
                    Bind::KvV(s) => stores[s as usize].v.as_entire_binding(),
                    Bind::KvPos(s) => stores[s as usize].cell_pos.as_entire_binding(),
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
    }

    /// Run one step of sequence 0: `tokens` at `positions` (increasing), reading and
    /// extending the KV stores `kv`. Returns the output node's values.
    pub fn run<'g>(
        &mut self,
        g: &'g mut GpuPreparedGraph,
        tokens: &[u32],
        positions: &[i32],
        kv: &mut [GpuKvStore],
    ) -> Result<&'g [f32], GpuError> {
        self.run_step(g, &Step::single(tokens, positions), kv)
    }

    /// Run one step that may mix sequences: each sequence group of `step` reads and extends
    /// its cells of the stores `kv` (one per attention layer, serving every sequence).
    /// Returns the output node's values; a step the stores' pools have no room for is
    /// [`GpuError::KvFull`], changing nothing.
    pub fn run_step<'g>(
        &mut self,
        g: &'g mut GpuPreparedGraph,
        step: &Step<'_>,
        kv: &mut [GpuKvStore],
    ) -> Result<&'g [f32], GpuError> {
        check_step(&g.graph, &g.layout, step, kv)?;
        let (tokens, positions) = (step.tokens, step.positions);
        g.groups.clear();
        g.groups.extend(step.groups());
        for &s in &g.layout.writes {
            let sizes = g
                .groups
                .iter()
                .map(|(q, r)| (*q, positions[r.start], r.len()));
            kv[s as usize].check_step(sizes)?;
        }
        for &s in &g.layout.writes {
            for (seq, r) in &g.groups {
                kv[s as usize].take_cells(*seq, &positions[r.clone()]);
            }
        }
        // The step's values.
        g.layout.write(
            &mut g.step_host,
            tokens,
            positions,
            &g.groups,
            step.out_rows,
            kv,
        );
        let step_bytes = (g.step_host.len() * 4) as u64;
        if step_bytes > g.step.size() {
            // Pool cell lists outgrew the step buffer: a larger one, new bind groups.
            g.step = self.dev.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step"),
                size: step_bytes.max(2 * g.step.size()),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            g.bound = None;
        }
        self.dev
            .queue
            .write_buffer(&g.step, 0, bytemuck::cast_slice(&g.step_host));
        // Bind groups, made again when the buffers they bind were replaced or other KV stores
        // are passed.
        let shared = self.shared.as_ref().expect("made by prepare");
        if g.shared.generation != shared.generation {
            g.shared = shared.clone();
            g.bound = None;
        }
        if g.bound.as_ref().is_none_or(|(b, _)| {
            b.len() != kv.len() || b.iter().zip(kv.iter()).any(|(&i, s)| i != s.id)
        }) {
            let ids = kv.iter().map(|s| s.id).collect();
            let groups = (g.dispatches.iter())
                .map(|d| self.bind_group(g, d, kv))
                .collect();
            g.bound = Some((ids, groups));
        }
        let bind_groups = &g.bound.as_ref().expect("just made").1;
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
            for (d, bg) in g.dispatches.iter().zip(bind_groups) {
                let Some([x, y, z]) = launch(d, &g.step_host) else {
                    continue;
                };
                pass.set_pipeline(&self.pipelines[&d.kernel]);
                pass.set_bind_group(0, bg, &[]);
                pass.dispatch_workgroups(x, y, z);
            }
        }
        let bytes = g.out_range.1 as u64 * 4;
        enc.copy_buffer_to_buffer(&g.shared.arena, g.out_range.0, &g.readback, 0, bytes);
        self.dev.queue.submit([enc.finish()]);
        map_read(&self.dev, &g.readback, bytes, &mut g.out_host)?;
        for &s in &g.layout.writes {
            for (seq, r) in &g.groups {
                kv[s as usize].note_written(*seq, &positions[r.clone()]);
            }
        }
        Ok(&g.out_host)
    }
}

/// The workgroups of dispatch `d` this step, or `None` where it does not run (an attention
/// kernel of a group the step lacks, or of the other kind for the group's size).
fn launch(d: &Dispatch, host: &[u32]) -> Option<[u32; 3]> {
    match d.seq_group {
        None => Some(d.groups),
        Some(sg) => sg.workgroups(d.groups, host),
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
                    if let Some([x, y, z]) = launch(disp, &g.step_host) {
                        pass.set_pipeline(&self.pipelines[&disp.kernel]);
                        pass.set_bind_group(0, &groups[d], &[]);
                        pass.dispatch_workgroups(x, y, z);
                    }
                    d += 1;
                }
            }
            self.dev.queue.submit([enc.finish()]);
            self.dev
                .device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| GpuError::Device(e.to_string()))?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let arena = read_buffer(&self.dev, &g.shared.arena)?;
            let v = &arena[g.node_range(NodeId(i as u32))];
            eprintln!("{} {ms:.3} ms", node.trace_line(v));
        }
        Ok(())
    }
}

/// Fails unless `step` over the stores `kv` (one per attention layer) is a valid step of
/// `graph` laid out as `layout`: as many tokens as it takes, each sequence's contiguous at
/// increasing non-negative positions, no more sequences than it was prepared for or the
/// stores serve, ids inside the vocabulary, every KV store it names passed with the widths
/// its layer needs, and as many output rows as it selects.
fn check_step(
    graph: &Graph,
    layout: &StepLayout,
    step: &Step<'_>,
    kv: &[GpuKvStore],
) -> Result<(), GpuError> {
    let (tokens, positions) = (step.tokens, step.positions);
    let n_tok = graph.n_tokens;
    if tokens.len() != n_tok || positions.len() != n_tok {
        return Err(GpuError::Unsupported(format!(
            "the graph takes {n_tok} tokens, the step has {} tokens and {} positions",
            tokens.len(),
            positions.len()
        )));
    }
    if positions.iter().any(|&p| p < 0)
        || step
            .groups()
            .any(|(_, r)| positions[r].windows(2).any(|w| w[1] <= w[0]))
    {
        return Err(GpuError::Unsupported(
            "positions must be non-negative and increasing within each sequence".into(),
        ));
    }
    let n_seq = kv.iter().map(GpuKvStore::n_seq).min().unwrap_or(1);
    if let Err(e) = step.validate(n_seq) {
        return Err(GpuError::Unsupported(e.to_string()));
    }
    let n_groups = step.groups().count();
    if n_groups > layout.n_groups {
        return Err(GpuError::Unsupported(format!(
            "the step mixes {n_groups} sequences, the graph was prepared for {}",
            layout.n_groups
        )));
    }
    if let Some((_, k)) = layout.out_rows
        && step.out_rows.len() != k
    {
        return Err(GpuError::Unsupported(format!(
            "the graph selects {k} output rows, the step names {}",
            step.out_rows.len()
        )));
    }
    for node in &graph.nodes {
        match node.op {
            Op::GetRows { table } => {
                let n_vocab = graph.weight(table).n_rows();
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
                // A store without values (MLA's latent cache) reads them from the keys.
                let values_in_keys = s.v_width() == 0 && params.head_dim_v <= params.head_dim;
                if s.k_width() != params.n_head_kv * params.head_dim
                    || (s.v_width() != params.n_head_kv * params.head_dim_v && !values_in_keys)
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
    Ok(())
}
