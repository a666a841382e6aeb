//! Waiting places: a request for something the relay has not got yet (the image's files,
//! the next chunk of a stream) waits in one of [`MAX_WAITING`] places, at most
//! [`MAX_WAITING_PER_CLIENT`] per address; without a free place it is refused at once
//! ([`Unavailable::Busy`]). So a few clients asking for chunks that are not here cannot
//! hold the relay. Counting only; the relay holds it under its lock.

use std::collections::HashMap;
use std::net::IpAddr;

/// Requests from one address that may wait at once. A downstream node streams one range
/// at a time; four leave room for its manifest and layout and for a stream it reopened
/// while the broken one still waits.
pub const MAX_WAITING_PER_CLIENT: usize = 4;

/// Requests that may wait at once, from all addresses: more than the nodes of a rack in
/// `fanout` (all waiting for the next chunk at the same moment is normal there).
pub const MAX_WAITING: usize = 128;

/// Why a relay cannot answer a request now (answered 503 with `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// It has not got the image (or the chunk) yet.
    NotYet,
    /// The waiting places (for this client, or all) are taken.
    Busy,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NotYet => f.write_str("this relay has not got the image yet"),
            Unavailable::Busy => write!(
                f,
                "relay busy: {MAX_WAITING_PER_CLIENT} requests of this client (or {MAX_WAITING} in all) already wait for chunks not here yet"
            ),
        }
    }
}

#[derive(Default)]
pub struct WaitingPlaces {
    per_client: HashMap<IpAddr, usize>,
    total: usize,
}

impl WaitingPlaces {
    /// Takes a place for `client`, or says it is [`Unavailable::Busy`].
    pub fn take(&mut self, client: IpAddr) -> Result<(), Unavailable> {
        let mine = self.per_client.get(&client).copied().unwrap_or(0);
        if mine >= MAX_WAITING_PER_CLIENT || self.total >= MAX_WAITING {
            return Err(Unavailable::Busy);
        }
        self.per_client.insert(client, mine + 1);
        self.total += 1;
        Ok(())
    }

    /// Gives a place of `client` back.
    pub fn give_back(&mut self, client: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_client.get_mut(&client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }

    /// Places `client` holds.
    #[cfg(test)]
    pub fn of(&self, client: IpAddr) -> usize {
        self.per_client.get(&client).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn places_are_limited_per_client_and_in_all() {
        let ip = |n: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
        let mut w = WaitingPlaces::default();
        for _ in 0..MAX_WAITING_PER_CLIENT {
            w.take(ip(1)).unwrap();
        }
        assert_eq!(w.take(ip(1)), Err(Unavailable::Busy));
        w.give_back(ip(1));
        assert_eq!(w.of(ip(1)), MAX_WAITING_PER_CLIENT - 1);
        w.take(ip(1)).unwrap();
        // Others fill the rest; then nobody gets one.
        let mut n = 2;
        while w.take(ip(n)).is_ok() {
            n += 1;
        }
        assert_eq!(w.total, MAX_WAITING);
        assert_eq!(w.take(ip(100_000)), Err(Unavailable::Busy));
        w.give_back(ip(2));
        assert_eq!(w.of(ip(2)), 0);
        w.take(ip(100_000)).unwrap();
    }
}
