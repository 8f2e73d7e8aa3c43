//! A linearizability checker for client histories (Wing & Gong's search with
//! Lowe's just-in-time linearization and memoisation, as in porcupine).
//!
//! A history is a list of [`Operation`]s, each with its call time and, if it
//! completed, its return time and output. An operation that never returned
//! (timed out) may have taken effect at any point after its call, or never.
//! The history is linearizable if some order of the operations, consistent
//! with real time (an operation that returned before another was called
//! comes first), makes the sequential [`Model`] give every observed output.
//!
//! The search memoises (set of linearized operations, model state) pairs so
//! that each is explored once, and stops after `max_steps` with
//! [`Outcome::Unknown`] rather than running away on long, highly concurrent
//! histories; callers keep histories short enough per check.
//!
//! Cross-key transactions are handled by checking the whole store as one
//! model (no per-key partitioning), which is exact but needs the bound above.

use std::collections::HashSet;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::kv::{KvState, Txn, TxnResponse};
use crate::lifecycle::EpochId;

/// A sequential specification.
pub trait Model {
    /// The state; hashed for memoisation.
    type State: Clone + Eq + Hash;
    /// An operation's input.
    type Input;
    /// An operation's output.
    type Output;
    /// The initial state.
    fn init(&self) -> Self::State;
    /// Applies `input` to `state`. Returns the new state if the model's
    /// answer equals `output`, or for any answer when `output` is `None`
    /// (the operation never returned); `None` if the output is impossible.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation<I, O> {
    /// The client (process) that issued it; a client's operations never overlap.
    pub client: u64,
    /// When it was called.
    pub call: u64,
    /// When it returned; `None` if it never did.
    pub ret: Option<u64>,
    /// What was asked.
    pub input: I,
    /// What came back; `None` if nothing did.
    pub output: Option<O>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A valid order exists.
    Linearizable,
    /// No valid order exists.
    NotLinearizable {
        /// The operation (index into the history) whose return could not be
        /// passed in the deepest attempt.
        stuck_at: usize,
        /// How many operations the deepest attempt linearized.
        deepest: usize,
    },
    /// The search gave up after this many steps.
    Unknown {
        /// Steps taken.
        steps: u64,
    },
}

/// The KV store as a model: transactions against [`KvState`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = KvState;
    type Input = Txn;
    type Output = TxnResponse;

    fn init(&self) -> KvState {
        KvState::default()
    }

    fn step(&self, state: &KvState, input: &Txn, output: Option<&TxnResponse>) -> Option<KvState> {
        let mut next = state.clone();
        let response = next.apply(input, &mut Vec::new());
        match output {
            Some(seen) if *seen != response => None,
            _ => Some(next),
        }
    }
}

/// The KV model starting from a given state: a cluster epoch's seed.
#[derive(Debug, Clone)]
pub struct SeededKvModel(pub KvState);

impl Model for SeededKvModel {
    type State = KvState;
    type Input = Txn;
    type Output = TxnResponse;

    fn init(&self) -> KvState {
        self.0.clone()
    }

    fn step(&self, state: &KvState, input: &Txn, output: Option<&TxnResponse>) -> Option<KvState> {
        KvModel.step(state, input, output)
    }
}

/// A client history that any checker can judge on its own: every
/// operation with the cluster epoch whose member answered it, and the
/// state each epoch started from (empty, or the export it was formed from).
///
/// Re-forming a fleet after it lost every member may lose the writes after
/// the newest export, so one history across epochs is not linearizable
/// from an empty store; each epoch's is, from its own start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochHistory {
    /// Each epoch and the state it started from.
    pub epochs: Vec<(EpochId, KvState)>,
    /// The operations, each with the epoch that answered it.
    pub operations: Vec<(EpochId, Operation<Txn, TxnResponse>)>,
}

impl EpochHistory {
    /// Checks each epoch's operations from its start; the first epoch that
    /// fails, and why.
    pub fn check(&self, max_steps: u64) -> Result<(), String> {
        let mut by_epoch: std::collections::BTreeMap<EpochId, KvHistory> = Default::default();
        for (epoch, op) in &self.operations {
            by_epoch.entry(*epoch).or_default().push(op.clone());
        }
        for (epoch, history) in by_epoch {
            let Some((_, seed)) = self.epochs.iter().find(|(e, _)| *e == epoch) else {
                return Err(format!(
                    "epoch {epoch} answered clients but its starting state is not in the history"
                ));
            };
            match check(&SeededKvModel(seed.clone()), &history, max_steps) {
                Outcome::Linearizable => {}
                Outcome::NotLinearizable { stuck_at, deepest } => {
                    return Err(format!(
                        "linearizability: epoch {epoch}'s history of {} operations is not linearizable (stuck at operation {stuck_at}: {:?}; deepest order {deepest})",
                        history.len(),
                        history.get(stuck_at)
                    ));
                }
                Outcome::Unknown { steps } => {
                    return Err(format!(
                        "linearizability: epoch {epoch}: inconclusive after {steps} steps on {} operations",
                        history.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A KV history, as the simulator records and writes it out (JSON).
pub type KvHistory = Vec<Operation<Txn, TxnResponse>>;

/// The events of the search's doubly linked list.
#[derive(Debug, Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

/// Checks `history` against `model` (see the module doc).
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    max_steps: u64,
) -> Outcome {
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(history.len() * 2);
    for (op, o) in history.iter().enumerate() {
        // Calls sort before returns at equal times: overlap is the permissive reading.
        events.push((o.call, 0, Event { op, is_call: true }));
        if let Some(ret) = o.ret {
            events.push((ret, 1, Event { op, is_call: false }));
        }
    }
    events.sort_by_key(|&(t, kind, e)| (t, kind, e.op));
    let mut list = List::new(events.iter().map(|&(_, _, e)| e).collect(), history.len());

    let mut state = model.init();
    let mut linearized = Bits::new(history.len());
    let mut cache: HashSet<(Bits, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let (mut deepest, mut stuck_at) = (0, 0);
    let mut entry = list.first();
    let mut steps = 0u64;
    while let Some(at) = entry {
        steps += 1;
        if steps > max_steps {
            return Outcome::Unknown { steps };
        }
        let event = list.events[at];
        if event.is_call {
            let o = &history[event.op];
            if let Some(next) = model.step(&state, &o.input, o.output.as_ref()) {
                let mut bits = linearized.clone();
                bits.set(event.op);
                if cache.insert((bits.clone(), next.clone())) {
                    stack.push((at, std::mem::replace(&mut state, next)));
                    linearized = bits;
                    list.lift(at);
                    entry = list.first();
                    continue;
                }
            }
            entry = list.next(at);
        } else {
            if stack.len() >= deepest {
                deepest = stack.len();
                stuck_at = event.op;
            }
            let Some((call, previous)) = stack.pop() else {
                return Outcome::NotLinearizable { stuck_at, deepest };
            };
            state = previous;
            linearized.clear(list.events[call].op);
            list.unlift(call);
            entry = list.next(call);
        }
    }
    Outcome::Linearizable
}

/// A fixed-size bit set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The call/return events as a doubly linked list from which a call and its
/// return are lifted together and restored in reverse order.
struct List {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The return event of each operation, by event position.
    ret_of: Vec<Option<usize>>,
    head: usize,
}

impl List {
    fn new(events: Vec<Event>, ops: usize) -> Self {
        let n = events.len();
        let head = n;
        let mut ret_at = vec![None; ops];
        for (i, e) in events.iter().enumerate() {
            if !e.is_call {
                ret_at[e.op] = Some(i);
            }
        }
        let ret_of = events
            .iter()
            .map(|e| if e.is_call { ret_at[e.op] } else { None })
            .collect();
        // Positions 0..n are events; n is the head sentinel; the list is circular.
        let next = (0..=n).map(|i| (i + 1) % (n + 1)).collect();
        let prev = (0..=n).map(|i| if i == 0 { n } else { i - 1 }).collect();
        List {
            events,
            next,
            prev,
            ret_of,
            head,
        }
    }

    fn first(&self) -> Option<usize> {
        self.next(self.head)
    }

    fn next(&self, at: usize) -> Option<usize> {
        let n = self.next[at];
        (n != self.head).then_some(n)
    }

    fn unlink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, at: usize) {
        let (p, n) = (self.prev[at], self.next[at]);
        self.next[p] = at;
        self.prev[n] = at;
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.ret_of[call] {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.ret_of[call] {
            self.relink(ret);
        }
        self.relink(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{CmpOp, Compare, CompareTarget, Op};

    type H = KvHistory;

    fn put(k: &str, v: &str) -> Txn {
        Txn::single(Op::Put {
            key: k.into(),
            value: v.into(),
        })
    }

    fn get(k: &str) -> Txn {
        Txn::single(Op::Get { key: k.into() })
    }

    /// The answer `txn` gets after `before` ran sequentially.
    fn answer(before: &[&Txn], txn: &Txn) -> TxnResponse {
        let mut s = KvState::default();
        for t in before {
            s.apply(t, &mut Vec::new());
        }
        s.apply(txn, &mut Vec::new())
    }

    fn op(
        client: u64,
        call: u64,
        ret: Option<u64>,
        input: Txn,
        output: Option<TxnResponse>,
    ) -> Operation<Txn, TxnResponse> {
        Operation {
            client,
            call,
            ret,
            input,
            output,
        }
    }

    fn verdict(h: &H) -> Outcome {
        check(&KvModel, h, 1_000_000)
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        let (w1, w2, r) = (put("x", "1"), put("x", "2"), get("x"));
        // w1 and w2 overlap; the read sees w1 after both: w2 then w1 is a valid order.
        let h = vec![
            op(1, 0, Some(10), w1.clone(), Some(answer(&[&w2], &w1))),
            op(2, 5, Some(15), w2.clone(), Some(answer(&[], &w2))),
            op(3, 20, Some(30), r.clone(), Some(answer(&[&w2, &w1], &r))),
        ];
        assert_eq!(verdict(&h), Outcome::Linearizable);
    }

    #[test]
    fn pending_write_may_or_may_not_have_happened() {
        let (w1, w2, r) = (put("x", "1"), put("x", "2"), get("x"));
        let seen_it = vec![
            op(1, 0, Some(10), w1.clone(), Some(answer(&[], &w1))),
            op(2, 20, None, w2.clone(), None),
            op(3, 30, Some(40), r.clone(), Some(answer(&[&w1, &w2], &r))),
        ];
        assert_eq!(verdict(&seen_it), Outcome::Linearizable);
        let did_not = vec![
            op(1, 0, Some(10), w1.clone(), Some(answer(&[], &w1))),
            op(2, 20, None, w2.clone(), None),
            op(3, 30, Some(40), r.clone(), Some(answer(&[&w1], &r))),
        ];
        assert_eq!(verdict(&did_not), Outcome::Linearizable);
        // But a pending write cannot take effect before it was called.
        let too_early = vec![
            op(3, 0, Some(5), r.clone(), Some(answer(&[&w2], &r))),
            op(2, 20, None, w2.clone(), None),
        ];
        assert!(matches!(
            verdict(&too_early),
            Outcome::NotLinearizable { .. }
        ));
    }

    #[test]
    fn stale_read_is_rejected() {
        let (w1, w2, r) = (put("x", "1"), put("x", "2"), get("x"));
        let h = vec![
            op(1, 0, Some(10), w1.clone(), Some(answer(&[], &w1))),
            op(1, 20, Some(30), w2.clone(), Some(answer(&[&w1], &w2))),
            op(2, 40, Some(50), r.clone(), Some(answer(&[&w1], &r))),
        ];
        assert!(
            matches!(verdict(&h), Outcome::NotLinearizable { stuck_at: 2, .. }),
            "{:?}",
            verdict(&h)
        );
    }

    #[test]
    fn lost_acknowledged_write_is_rejected() {
        let (w1, r) = (put("x", "1"), get("x"));
        let h = vec![
            op(1, 0, Some(10), w1.clone(), Some(answer(&[], &w1))),
            op(2, 20, Some(30), r.clone(), Some(answer(&[], &r))),
        ];
        assert!(matches!(verdict(&h), Outcome::NotLinearizable { .. }));
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        let (w1, r) = (put("x", "1"), get("x"));
        let ghost = put("x", "ghost");
        let h = vec![
            op(1, 0, Some(10), w1.clone(), Some(answer(&[], &w1))),
            op(2, 5, Some(30), r.clone(), Some(answer(&[&ghost], &r))),
        ];
        assert!(matches!(verdict(&h), Outcome::NotLinearizable { .. }));
    }

    #[test]
    fn txn_observing_a_torn_state_is_rejected() {
        // One txn writes x and y together; a txn reading both must not see only one.
        let both = Txn {
            success: vec![
                Op::Put {
                    key: "x".into(),
                    value: "1".into(),
                },
                Op::Put {
                    key: "y".into(),
                    value: "1".into(),
                },
            ],
            ..Txn::default()
        };
        let read_both = Txn {
            success: vec![Op::Get { key: "x".into() }, Op::Get { key: "y".into() }],
            ..Txn::default()
        };
        let only_x = put("x", "1");
        let torn = answer(&[&only_x], &read_both);
        let h = vec![
            op(1, 0, Some(10), both.clone(), Some(answer(&[], &both))),
            op(2, 5, Some(15), read_both.clone(), Some(torn)),
        ];
        assert!(matches!(verdict(&h), Outcome::NotLinearizable { .. }));
        // The whole state, before or after, is fine.
        let h_ok = vec![
            op(1, 0, Some(10), both.clone(), Some(answer(&[], &both))),
            op(
                2,
                5,
                Some(15),
                read_both.clone(),
                Some(answer(&[], &read_both)),
            ),
        ];
        assert_eq!(verdict(&h_ok), Outcome::Linearizable);
    }

    #[test]
    fn compare_and_set_races_have_one_winner() {
        let cas = |v: &str| Txn {
            compares: vec![Compare {
                key: "x".into(),
                op: CmpOp::Equal,
                target: CompareTarget::Value("0".into()),
            }],
            success: vec![Op::Put {
                key: "x".into(),
                value: v.into(),
            }],
            failure: vec![],
        };
        let init = put("x", "0");
        let (a, b) = (cas("a"), cas("b"));
        let both_won = vec![
            op(0, 0, Some(1), init.clone(), Some(answer(&[], &init))),
            op(1, 10, Some(20), a.clone(), Some(answer(&[&init], &a))),
            op(2, 10, Some(20), b.clone(), Some(answer(&[&init], &b))),
        ];
        assert!(matches!(
            verdict(&both_won),
            Outcome::NotLinearizable { .. }
        ));
        let one_won = vec![
            op(0, 0, Some(1), init.clone(), Some(answer(&[], &init))),
            op(1, 10, Some(20), a.clone(), Some(answer(&[&init], &a))),
            op(2, 10, Some(20), b.clone(), Some(answer(&[&init, &a], &b))),
        ];
        assert_eq!(verdict(&one_won), Outcome::Linearizable);
    }

    #[test]
    fn histories_round_trip_as_json() {
        let w = put("x", "1");
        let h: H = vec![op(1, 0, Some(10), w.clone(), Some(answer(&[], &w)))];
        let json = serde_json::to_string(&h).unwrap();
        let back: H = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
    }
}
