//! A raw pointer into one buffer that the pool's threads share, each writing its own
//! disjoint range of it.

/// A raw pointer that may cross threads; every use writes a disjoint range.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);

// SAFETY: the pointer is only dereferenced through `slice`, whose callers guarantee that
// threads touch disjoint ranges of a live allocation; sending it is sending an address.
unsafe impl<T> Send for SharedMut<T> {}
// SAFETY: as for `Send`: shared references only hand out disjoint ranges (see `slice`).
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The elements `range` of the buffer, mutably.
    ///
    /// # Safety
    /// `range` must be inside the allocation and not touched by any other thread meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, range: std::ops::Range<usize>) -> &mut [T] {
        // SAFETY: the caller guarantees `range` lies inside the allocation and that nothing
        // else accesses it while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}
