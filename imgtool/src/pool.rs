//! A bounded, ordered worker pool: `threads` workers run `work(i)` for jobs `0..n`, and the
//! calling thread receives the results strictly in job order through `sink`. At most
//! `window` jobs run ahead of the sink, which bounds memory (each job holds one chunk).
//! The first error stops every worker and is returned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

pub fn run_ordered<T, E, W, S>(
    n: usize,
    threads: usize,
    window: usize,
    work: W,
    mut sink: S,
) -> Result<(), E>
where
    T: Send,
    E: Send,
    W: Fn(usize) -> Result<T, E> + Sync,
    S: FnMut(usize, T) -> Result<(), E>,
{
    let threads = threads.max(1).min(n.max(1));
    let window = window.max(threads);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let sunk = Mutex::new(0usize);
    let cv = Condvar::new();
    let (tx, rx) = mpsc::channel::<(usize, Result<T, E>)>();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop, sunk, cv, work) = (&next, &stop, &sunk, &cv, &work);
            s.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                {
                    let mut g = match sunk.lock() {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                    while i >= *g + window && !stop.load(Ordering::Relaxed) {
                        g = match cv.wait(g) {
                            Ok(g) => g,
                            Err(_) => return,
                        };
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let r = work(i);
                if tx.send((i, r)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut want = 0usize;
        let mut result = Ok(());
        for (i, r) in rx.iter() {
            pending.insert(i, r);
            while let Some(r) = pending.remove(&want) {
                let outcome = r.and_then(|t| sink(want, t));
                if let Err(e) = outcome {
                    result = Err(e);
                    stop.store(true, Ordering::Relaxed);
                    cv.notify_all();
                    break;
                }
                want += 1;
                if let Ok(mut g) = sunk.lock() {
                    *g = want;
                }
                cv.notify_all();
            }
            if result.is_err() {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        cv.notify_all();
        result
    })
}

/// Worker count: `requested`, or every core when 0.
pub fn threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_order_and_errors_stop() {
        let mut seen = vec![];
        run_ordered::<_, String, _, _>(
            100,
            4,
            8,
            |i| Ok(i * 2),
            |i, v| {
                seen.push((i, v));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..100).map(|i| (i, i * 2)).collect::<Vec<_>>());
        let r = run_ordered(
            100,
            4,
            8,
            |i| {
                if i == 37 {
                    Err(format!("job {i}"))
                } else {
                    Ok(i)
                }
            },
            |_, _| Ok(()),
        );
        assert_eq!(r, Err("job 37".to_string()));
    }
}
