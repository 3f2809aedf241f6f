//! The buffer planner: gives each node's output a slice of one f32 arena, reusing the space of
//! nodes whose last reader has run, so executing a planned graph allocates nothing.

use super::{Graph, NodeId};

/// Alignment of every buffer in the arena, in f32 elements (64 bytes).
const ALIGN: usize = 16;

/// Arena offsets for every node of one graph.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Offset (in f32 elements) of each node's output.
    pub offsets: Vec<usize>,
    /// Arena size needed, in f32 elements.
    pub arena_len: usize,
}

impl Plan {
    /// Plan `graph`: a first-fit allocator over the node order, freeing a buffer once the last
    /// node reading it has been given its own.
    pub fn new(graph: &Graph) -> Plan {
        let n = graph.nodes.len();
        let mut last_use: Vec<usize> = (0..n).collect();
        for (i, node) in graph.nodes.iter().enumerate() {
            for input in node.op.inputs() {
                last_use[input.0 as usize] = i;
            }
        }
        last_use[graph.output.0 as usize] = usize::MAX;

        // Free blocks (offset, len), sorted by offset; `top` is the arena's high-water mark.
        let mut free: Vec<(usize, usize)> = Vec::new();
        let mut top = 0usize;
        let mut offsets = vec![0usize; n];
        let mut sizes = vec![0usize; n];
        // Nodes whose buffers die after node i runs, grouped by i.
        let mut dies_at: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (j, &lu) in last_use.iter().enumerate() {
            if lu != usize::MAX {
                dies_at[lu.max(j)].push(j);
            }
        }
        for (i, node) in graph.nodes.iter().enumerate() {
            let size = (node.rows * node.cols).div_ceil(ALIGN) * ALIGN;
            sizes[i] = size;
            offsets[i] = match free.iter().position(|&(_, len)| len >= size) {
                Some(k) => {
                    let (off, len) = free[k];
                    if len == size {
                        free.remove(k);
                    } else {
                        free[k] = (off + size, len - size);
                    }
                    off
                }
                None => {
                    // Grow from the top, absorbing a free block that ends there.
                    if let Some(&(off, len)) = free.last()
                        && off + len == top
                    {
                        free.pop();
                        top = off + size;
                        off
                    } else {
                        let off = top;
                        top += size;
                        off
                    }
                }
            };
            for &j in &dies_at[i] {
                release(&mut free, offsets[j], sizes[j]);
            }
        }
        Plan {
            offsets,
            arena_len: top,
        }
    }

    /// The arena range of node `id`'s output (`len` elements).
    pub fn range(&self, id: NodeId, len: usize) -> std::ops::Range<usize> {
        let o = self.offsets[id.0 as usize];
        o..o + len
    }
}

/// Return a block to the sorted free list, merging with neighbours.
fn release(free: &mut Vec<(usize, usize)>, off: usize, len: usize) {
    let k = free.partition_point(|&(o, _)| o < off);
    free.insert(k, (off, len));
    if k + 1 < free.len() && free[k].0 + free[k].1 == free[k + 1].0 {
        free[k].1 += free[k + 1].1;
        free.remove(k + 1);
    }
    if k > 0 && free[k - 1].0 + free[k - 1].1 == free[k].0 {
        free[k - 1].1 += free[k].1;
        free.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GraphBuilder, Op};
    use super::*;
    use crate::Tensor;

    fn overlaps(a: std::ops::Range<usize>, b: std::ops::Range<usize>) -> bool {
        a.start < b.end && b.start < a.end
    }

    #[test]
    fn live_buffers_never_overlap_and_space_is_reused() {
        let emb = Tensor::from_f32("emb", vec![64, 10], &[0.5; 640]);
        let w = Tensor::from_f32("w", vec![64, 64], &[0.1; 4096]);
        let mut g = GraphBuilder::new(3);
        let mut x = g.get_rows(&emb);
        for _ in 0..20 {
            let h = g.rms_norm(x, None, 1e-5);
            let h = g.mat_mul(&w, h);
            let h2 = g.mat_mul(&w, h);
            let s = g.swiglu(h, h2);
            x = g.add(x, s);
        }
        let graph = g.finish(x);
        let plan = Plan::new(&graph);
        let n = graph.nodes.len();
        // Liveness: node j is live from j until its last reader.
        let mut last = (0..n).collect::<Vec<_>>();
        for (i, node) in graph.nodes.iter().enumerate() {
            for inp in node.op.inputs() {
                last[inp.0 as usize] = i;
            }
        }
        last[n - 1] = n;
        for (a, &last_a) in last.iter().enumerate() {
            for b in a + 1..n {
                let live_together = b <= last_a;
                let ra = plan.range(NodeId(a as u32), 3 * 64);
                let rb = plan.range(NodeId(b as u32), 3 * 64);
                if live_together {
                    assert!(!overlaps(ra, rb), "nodes {a} and {b} overlap");
                }
            }
        }
        // 101 nodes of 192 floats each would need 19392 without reuse.
        assert!(plan.arena_len <= 6 * 192, "arena {}", plan.arena_len);
        assert!(matches!(graph.nodes[0].op, Op::GetRows { .. }));
    }
}
