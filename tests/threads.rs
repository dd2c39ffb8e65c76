//! The threads `vigie run` matches batches on run at the lowest priority, so the stage every
//! batch waits on (the apply) gets the cores first (`service::start_match_pool`). Its own
//! test binary: rayon's global pool can be built once per process.

#[cfg(target_os = "linux")]
#[test]
fn matching_threads_yield_to_the_rest() {
    fn nice() -> i32 {
        // SAFETY: gettid and getpriority take and return integers only.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }
    let ours = nice();
    vigie::service::start_match_pool();
    let theirs: Vec<i32> = rayon::broadcast(|_| nice());
    assert_eq!(theirs.len(), rayon::current_num_threads());
    assert!(theirs.iter().all(|&n| n == 19), "{theirs:?}");
    // The caller's thread (the runtime's, in the service) keeps its own.
    assert_eq!(nice(), ours);
}
