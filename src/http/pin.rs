//! Each serving thread on a CPU of its own (`[server] pin_threads`), as nginx's
//! `worker_cpu_affinity`: a thread that stays on one CPU keeps its connections' state in
//! that CPU's caches. On the 2-core VM of `bench/proxy.sh`, where wrk and the upstream
//! share the cores, pinned against unpinned in alternating 3-second rounds (2026-12-03,
//! session-checked route, median of the per-round ratios): +7 % and +2 % at 256
//! connections (two sets of 7 rounds), +10 % at 64 (5 rounds), ±0 at 16 (7 rounds); single
//! rounds swing by ±20 %, so this is a small gain, not a large one.
//!
//! Only when the serving threads are as many as the CPUs the process may run on: with a
//! container's CPU quota below its CPU set (fewer threads than CPUs), every replica would
//! pin to the same first CPUs of the set and leave the others idle.

/// The CPU for each serving thread, in order, or `None` to leave them to the scheduler.
pub fn plan(enabled: bool, threads: usize) -> Option<Vec<usize>> {
    if !enabled {
        return None;
    }
    let allowed = match allowed_cpus() {
        Ok(allowed) => allowed,
        Err(e) => {
            tracing::debug!(error = %e, "serving threads not pinned: the CPU set is unknown");
            return None;
        }
    };
    let plan = one_each(&allowed, threads);
    match &plan {
        Some(cpus) => tracing::info!(?cpus, "serving threads pinned, one per CPU"),
        None => tracing::info!(
            threads,
            cpus = allowed.len(),
            "serving threads not pinned: fewer of them than CPUs (a CPU quota)"
        ),
    }
    plan
}

/// One CPU per thread when they are as many as the CPUs allowed; else none.
fn one_each(allowed: &[usize], threads: usize) -> Option<Vec<usize>> {
    (threads > 1 && allowed.len() == threads).then(|| allowed.to_vec())
}

/// The CPUs the process may run on (its affinity mask).
fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is plain data, valid when zeroed; the call gets its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .collect())
    }
}

/// Pins the calling thread to `cpu`.
pub fn to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cpus`; `cpu` is below CPU_SETSIZE (it came from a mask).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_pinned_only_when_they_cover_every_allowed_cpu() {
        assert_eq!(one_each(&[0, 1], 2), Some(vec![0, 1]));
        assert_eq!(one_each(&[2, 5, 7], 3), Some(vec![2, 5, 7]));
        assert_eq!(
            one_each(&[0, 1, 2, 3], 2),
            None,
            "a CPU quota below the set"
        );
        assert_eq!(one_each(&[0], 1), None, "one thread: nothing to spread");
    }

    #[test]
    fn the_process_cpu_set_is_read_and_a_thread_can_be_pinned() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        std::thread::spawn(move || {
            to_cpu(last).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![last]);
        })
        .join()
        .unwrap();
        assert!(plan(false, allowed.len()).is_none());
    }
}
