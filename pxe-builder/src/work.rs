//! A count of the steps `check` and `build` take, for the test that shows they grow
//! linearly with the cluster (`crate::plan::tests::work_grows_linearly_with_the_nodes`).
//! Every loop over nodes, members, entities or groups on those paths calls [`tick`] per
//! step, with the number of items it visits — a loop nested in another ticks inside, so a
//! search of a list per node shows up as quadratic. Only unit tests count: elsewhere
//! [`tick`] compiles to nothing.

#[cfg(test)]
thread_local! {
    static STEPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts `n` steps (test builds only).
#[inline(always)]
pub fn tick(n: usize) {
    #[cfg(test)]
    STEPS.with(|s| s.set(s.get().saturating_add(n as u64)));
    #[cfg(not(test))]
    let _ = n;
}

/// The steps counted on this thread since the last call (0 outside test builds). A
/// helper thread hands its count to the caller, which [`tick`]s it.
pub fn take() -> u64 {
    #[cfg(test)]
    return STEPS.with(|s| s.replace(0));
    #[cfg(not(test))]
    0
}
