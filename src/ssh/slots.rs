//! The session channels of one connection: how many the server allows (learnt at its
//! first refusal), who waits for one, the spare channel opened ahead of need, and kills,
//! which go first.
//!
//! sshd counts every session channel (processes, SFTP, the spare, kills) against its
//! `MaxSessions`, 10 by default, and refuses one more with `CHANNEL_OPEN_FAILURE`. A
//! connection starts with an optimistic limit ([`OPTIMISTIC`]); at the first refusal the
//! limit becomes the most channels the server ever had open at once from us, which is
//! what it allows (channels still in their close exchange count on the server's side, so
//! a refusal can also come within the limit: that open is retried). With
//! `max_channels(n)` the limit is `n` from the start, and one slot of it is kept for kills.
//!
//! The spare is a session channel opened ahead of need, and *warm*: the remote line's
//! bootstrap is its exec string, sent as soon as it is open, so its shell is up and waits
//! for a line's header on stdin. A command on it costs one round trip (the header) instead
//! of three (open; exec, which is what makes sshd open the channel's window; the header).
//! A task drains it until a command takes it (`connection::Warm`); what a login shell's rc
//! file printed meanwhile goes to that command first. It is opened again only when a slot
//! is free and nobody waits for one (so it never takes a slot from a caller), and it goes
//! to the first command. Callers that need a channel with nothing sent on it (SFTP, kills,
//! sudo, a pty) take a free slot instead, and end the spare to make one only when there is
//! none.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::connection::Warm;

/// The limit before the server has refused a channel: far above OpenSSH's default, so that
/// a server that allows many sessions gets them all.
pub(crate) const OPTIMISTIC: usize = 1024;

/// The session channels of one connection.
pub(crate) struct Slots {
    state: Mutex<State>,
    /// Woken (one at a time) when a slot frees or a spare is put back.
    freed: Notify,
    /// The same, for kills waiting (they go first).
    freed_for_kill: Notify,
}

struct State {
    /// Slots taken: channels open, being opened, or spare.
    held: usize,
    /// Channels the server has confirmed and not yet closed, and the most at once.
    open: usize,
    most_open: usize,
    limit: usize,
    /// Whether `limit` is the server's (learnt, or set with `max_channels`).
    known: bool,
    /// Slots only kills may take (one with `max_channels`).
    reserve: usize,
    waiting: usize,
    kills_waiting: usize,
    /// The spare (see the module docs).
    spare: Option<(Warm, Slot)>,
    /// A spare is being opened.
    spare_coming: bool,
}

/// One slot, given back when dropped.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    /// Whether the server confirmed the channel on this slot.
    confirmed: bool,
}

/// What a caller waiting for a channel gets.
pub(crate) enum Taken {
    /// The spare channel, open and unused.
    Spare(Warm, Slot),
    /// A slot to open a channel on.
    Slot(Slot),
}

/// What a refused open on a slot should do next.
pub(crate) enum Refused {
    /// Retry on the same slot: the server is still closing one of ours.
    Retry,
    /// Give the slot back and wait for another: the limit is lower than we had.
    Wait,
}

impl Slots {
    /// `max_channels`: the server's limit when the script set it, one slot of it kept for
    /// kills; `None` learns the limit.
    pub(crate) fn new(max_channels: Option<usize>) -> Arc<Slots> {
        let (limit, known, reserve) = match max_channels {
            Some(limit) => (limit.max(2), true, 1),
            None => (OPTIMISTIC, false, 0),
        };
        Arc::new(Slots {
            state: Mutex::new(State {
                held: 0,
                open: 0,
                most_open: 0,
                limit,
                known,
                reserve,
                waiting: 0,
                kills_waiting: 0,
                spare: None,
                spare_coming: false,
            }),
            freed: Notify::new(),
            freed_for_kill: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds valid counts.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes one waiter: a kill if one waits, else a caller.
    fn wake(&self, state: &State) {
        if state.kills_waiting > 0 {
            self.freed_for_kill.notify_one();
        } else {
            self.freed.notify_one();
        }
    }

    /// The spare, or a free slot, waiting for one. A kill takes any slot of the limit and
    /// goes before the callers waiting; a caller leaves the reserve to kills. A warm spare
    /// goes to a caller that cannot use it (`!warm_ok`) only when there is no free slot:
    /// to be ended, which frees one.
    pub(crate) async fn take(self: &Arc<Self>, for_kill: bool, warm_ok: bool) -> Taken {
        loop {
            let notify = if for_kill {
                &self.freed_for_kill
            } else {
                &self.freed
            };
            let freed = notify.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.state();
                if let Some(taken) = self.take_now(&mut state, for_kill, warm_ok) {
                    return taken;
                }
                if for_kill {
                    state.kills_waiting += 1;
                } else {
                    state.waiting += 1;
                }
            }
            let waiting = Waiting {
                slots: self,
                for_kill,
            };
            freed.await;
            drop(waiting);
        }
    }

    /// What [`take`](Slots::take) gives a caller (not a kill) at once, without waiting;
    /// `None` when there is nothing, or kills wait.
    pub(crate) fn try_take(self: &Arc<Self>, warm_ok: bool) -> Option<Taken> {
        self.take_now(&mut self.state(), false, warm_ok)
    }

    fn take_now(
        self: &Arc<Self>,
        state: &mut State,
        for_kill: bool,
        warm_ok: bool,
    ) -> Option<Taken> {
        if warm_ok && let Some((spare, slot)) = state.spare.take() {
            return Some(Taken::Spare(spare, slot));
        }
        let room = if for_kill {
            state.limit
        } else {
            state.limit.saturating_sub(state.reserve)
        };
        if state.held < room && (for_kill || state.kills_waiting == 0) {
            state.held += 1;
            return Some(Taken::Slot(self.slot()));
        }
        // No room: the spare, for a caller that cannot use it to end, which makes one.
        state
            .spare
            .take()
            .map(|(spare, slot)| Taken::Spare(spare, slot))
    }

    /// A free slot for a spare, only when nobody waits for one.
    pub(crate) fn take_for_spare(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.state();
        let room = state.limit.saturating_sub(state.reserve);
        let idle = state.waiting == 0
            && state.kills_waiting == 0
            && state.spare.is_none()
            && !state.spare_coming;
        if idle && state.held < room {
            state.held += 1;
            state.spare_coming = true;
            Some(self.slot())
        } else {
            None
        }
    }

    fn slot(self: &Arc<Self>) -> Slot {
        Slot {
            slots: self.clone(),
            confirmed: false,
        }
    }

    /// Keeps `spare` as the spare, for the first caller. Returns it when there already is
    /// one (to be ended).
    pub(crate) fn put_spare(&self, spare: Warm, slot: Slot) -> Option<(Warm, Slot)> {
        let mut state = self.state();
        state.spare_coming = false;
        if state.spare.is_some() {
            return Some((spare, slot));
        }
        state.spare = Some((spare, slot));
        self.wake(&state);
        None
    }

    /// The server confirmed the channel on `slot`.
    pub(crate) fn confirmed(&self, slot: &mut Slot) {
        let mut state = self.state();
        slot.confirmed = true;
        state.open += 1;
        state.most_open = state.most_open.max(state.open);
        // A kill beyond the limit got through: the server allows more than we thought.
        if state.known && state.reserve == 0 && state.most_open > state.limit {
            state.limit = state.most_open;
        }
    }

    /// The server refused a channel on `slot`: learn its limit the first time.
    pub(crate) fn refused(&self) -> Refused {
        let mut state = self.state();
        if !state.known {
            state.known = true;
            state.limit = state.most_open.max(1);
        }
        if state.held > state.limit {
            Refused::Wait
        } else {
            Refused::Retry
        }
    }

    /// How busy the channels are, lowest first: 0 with the spare ready, 1 with a free
    /// slot, 2 with neither; then the slots taken and the callers waiting.
    pub(crate) fn busyness(&self) -> (u8, usize) {
        let state = self.state();
        let room = state.limit.saturating_sub(state.reserve);
        let rank = if state.spare.is_some() {
            0
        } else if state.held < room {
            1
        } else {
            2
        };
        (rank, state.held + state.waiting + state.kills_waiting)
    }

    /// The spare could not be opened.
    pub(crate) fn spare_failed(&self) {
        self.state().spare_coming = false;
    }

    /// The spare channel, taken out (when the connection closes).
    pub(crate) fn take_spare(&self) -> Option<(Warm, Slot)> {
        self.state().spare.take()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.state();
        state.held -= 1;
        if self.confirmed {
            state.open -= 1;
        }
        self.slots.wake(&state);
    }
}

/// A caller counted as waiting until it stops (woken, or its future dropped).
struct Waiting<'a> {
    slots: &'a Slots,
    for_kill: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.slots.state();
        if self.for_kill {
            state.kills_waiting -= 1;
        } else {
            state.waiting -= 1;
        }
    }
}
