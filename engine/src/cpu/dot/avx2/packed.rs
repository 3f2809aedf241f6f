//! The one driver of the packed prompt kernels (`gemm_q4k_packed`, `gemm_q6k_packed`,
//! `gemm_q4k_zmm`, `gemm_q6k_zmm`): grow the thread's scratch, then per group of rows repack
//! the group once and run its tile over the tokens, four at a time, then one at a time. Each
//! kernel supplies only its group size, scratch, repack and tile ([`PackedKernel`]).

/// Tokens per tile pass (they share each loaded weight vector).
pub(super) const TT: usize = 4;

/// A packed prompt kernel: `ROWS` weight rows repacked together, a super-block at a time,
/// into `Block`s that its tile multiplies against Q8_K activations.
pub(super) trait PackedKernel {
    /// One super-block of `ROWS` repacked rows.
    type Block;
    /// Rows per group.
    const ROWS: usize;

    /// This thread's scratch, grown to at least `len` blocks. Nothing else touches it until
    /// the caller returns (no kernel reenters it).
    fn scratch(len: usize) -> *mut Self::Block;

    /// Repacks rows `0..nr` (`nr ≤ ROWS`; the rest zero) at `w` (`wrb` apart) into
    /// `dst[0..nb]`.
    ///
    /// # Safety
    /// The kernel's CPU features present; `nb` super-blocks readable in each of the `nr`
    /// rows; `dst` holds `nb`.
    unsafe fn repack(nb: usize, w: *const u8, wrb: usize, nr: usize, dst: *mut Self::Block);

    /// `out[t·ldo + r] = w_r · a_t` for the rows of `pk` (first `nr` stored) and `n` tokens
    /// (1 or [`TT`]) at `a` (`arb` apart), over `nb` super-blocks.
    ///
    /// # Safety
    /// The kernel's CPU features present; `pk` holds `nb`; `nb` Q8_K blocks readable in
    /// each token; `out` writable at every `t·ldo + r` for `t < n`, `r < nr`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        n: usize,
        nb: usize,
        pk: *const Self::Block,
        a: *const u8,
        arb: usize,
        out: *mut f32,
        ldo: usize,
        nr: usize,
    );
}

/// `out[t·rows + r] = w_r · a_t` over packed groups of `K::ROWS` rows.
///
/// # Safety
/// `K`'s CPU features present; `nb` super-blocks readable in each of the `rows` rows at `w`
/// (`wrb` apart) and the `tokens` Q8_K rows at `a` (`arb` apart); `out` holds
/// `tokens × rows`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_packed<K: PackedKernel>(
    nb: usize,
    w: *const u8,
    wrb: usize,
    rows: usize,
    a: *const u8,
    arb: usize,
    tokens: usize,
    out: *mut f32,
) {
    let groups = rows.div_ceil(K::ROWS);
    let pk = K::scratch(groups * nb);
    for g in 0..groups {
        let r0 = K::ROWS * g;
        let nr = (rows - r0).min(K::ROWS);
        // SAFETY: `g < groups`, and the scratch was grown to `groups·nb` blocks.
        let gp = unsafe { pk.add(g * nb) };
        // SAFETY: rows `r0..r0 + nr <= rows` hold `nb` readable super-blocks each (precondition),
        // and `gp` has `nb` of this thread's scratch.
        unsafe { K::repack(nb, w.add(r0 * wrb), wrb, nr, gp) };
        let mut t = 0;
        while t < tokens {
            let n = if t + TT <= tokens { TT } else { 1 };
            // SAFETY: `t < tokens`: row `t` of the activations, and token `t`'s outputs in `out`.
            let (at, ot) = unsafe { (a.add(t * arb), out.add(t * rows + r0)) };
            // SAFETY: tokens `t..t + n <= tokens` hold `nb` readable blocks, and outputs
            // `(t + i)·rows + r0 + j` (`j < nr`) lie inside `out`.
            unsafe { K::tile(n, nb, gp, at, arb, ot, rows, nr) };
            t += n;
        }
    }
}
