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

/// A three-stage pipeline: one thread runs `produce(i)` for `i` in `0..n`, in order (the
/// sequential reader: it keeps the disk busy while the workers compute), `threads`
/// workers run `work(i, item)`, and the caller's thread receives `sink(i, result)` in job
/// order. At most `2 * threads` produced items wait for a worker, which bounds memory.
/// The first error (from any stage) stops the others and is returned.
pub fn run_pipeline<P, T, E, R, W, S>(
    n: usize,
    threads: usize,
    produce: R,
    work: W,
    mut sink: S,
) -> Result<(), E>
where
    P: Send,
    T: Send,
    E: Send,
    R: Fn(usize) -> Result<P, E> + Send,
    W: Fn(usize, P) -> Result<T, E> + Sync,
    S: FnMut(usize, T) -> Result<(), E>,
{
    let threads = threads.max(1);
    let stop = AtomicBool::new(false);
    let (ptx, prx) = mpsc::sync_channel::<(usize, Result<P, E>)>(threads * 2);
    let prx = Mutex::new(prx);
    let (rtx, rrx) = mpsc::channel::<(usize, Result<T, E>)>();
    std::thread::scope(|s| {
        let stop_ref = &stop;
        s.spawn(move || {
            for i in 0..n {
                let item = produce(i);
                let failed = item.is_err();
                let mut msg = (i, item);
                loop {
                    if stop_ref.load(Ordering::Relaxed) {
                        return;
                    }
                    match ptx.try_send(msg) {
                        Ok(()) => break,
                        Err(mpsc::TrySendError::Full(m)) => {
                            msg = m;
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        Err(mpsc::TrySendError::Disconnected(_)) => return,
                    }
                }
                if failed {
                    return;
                }
            }
        });
        for _ in 0..threads {
            let rtx = rtx.clone();
            let (prx, stop, work) = (&prx, &stop, &work);
            s.spawn(move || loop {
                let next = match prx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((i, item)) = next else {
                    return;
                };
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let r = item.and_then(|p| work(i, p));
                if rtx.send((i, r)).is_err() {
                    return;
                }
            });
        }
        drop(rtx);
        let mut pending = BTreeMap::new();
        let mut want = 0usize;
        let mut result = Ok(());
        'outer: for (i, r) in rrx.iter() {
            pending.insert(i, r);
            while let Some(r) = pending.remove(&want) {
                if let Err(e) = r.and_then(|t| sink(want, t)) {
                    result = Err(e);
                    break 'outer;
                }
                want += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
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
    fn pipeline_orders_results_and_stops_on_any_error() {
        let mut seen = vec![];
        run_pipeline::<_, _, String, _, _, _>(
            200,
            3,
            Ok,
            |i, p| Ok((i, p * 3)),
            |i, v| {
                seen.push((i, v));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..200).map(|i| (i, (i, i * 3))).collect::<Vec<_>>());
        // An error in each stage ends the pipeline (no deadlock) and is the one returned.
        let r = run_pipeline(
            200,
            2,
            |i| if i == 50 { Err("read 50") } else { Ok(i) },
            |_, p| Ok(p),
            |_, _| Ok(()),
        );
        assert_eq!(r, Err("read 50"));
        let r = run_pipeline(
            200,
            2,
            Ok,
            |i, p| if i == 7 { Err("work 7") } else { Ok(p) },
            |_, _| Ok(()),
        );
        assert_eq!(r, Err("work 7"));
        let r = run_pipeline(
            200,
            2,
            Ok,
            |_, p| Ok(p),
            |i, _| if i == 3 { Err("sink 3") } else { Ok(()) },
        );
        assert_eq!(r, Err("sink 3"));
    }

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
