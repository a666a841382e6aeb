//! Who fetched from this relay ("have you seen U?", [`netboot_proto::seen`]): every
//! request under `/<image>/` records its peer address in a bounded
//! [`netboot_proto::seen::SeenSet`], `.done` marks it finished, and
//! `GET /<image>/.seen/<address>` answers what is known of that address. A node waiting
//! for an upstream that never answered asks its next candidate this: an upstream that
//! fetched from here had booted and listened (its relay listens before its first request
//! upstream, `crate::clone::clone`), so if it is silent now it is gone, not late.
//!
//! Not recorded: the queries themselves and the rack's boot files (a node fetches those
//! before its agent runs, so they say nothing about a listening relay).

use super::Relay;
use netboot_proto::seen::SeenAnswer;
use std::net::IpAddr;

impl Relay {
    /// `client` fetched something of the image from here.
    pub(super) fn saw(&self, client: IpAddr) {
        self.seen().fetched(client);
    }

    /// `client` said it holds every chunk.
    pub(super) fn saw_done(&self, client: IpAddr) {
        self.seen().finished(client);
    }

    /// What this relay knows of `addr`.
    pub(super) fn seen_answer(&self, addr: IpAddr) -> SeenAnswer {
        self.seen().answer(addr)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, netboot_proto::seen::SeenSet> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{region, relay_of};
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn a_relay_answers_who_fetched_and_who_finished() {
        let r = relay_of(&region(1));
        let (a, b, c) = (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
        );
        r.saw(a);
        r.saw(b);
        r.saw_done(b);
        assert!(r.seen_answer(a).seen && !r.seen_answer(a).done);
        assert!(r.seen_answer(b).seen && r.seen_answer(b).done);
        assert!(!r.seen_answer(c).seen && !r.seen_answer(c).done);
    }
}
