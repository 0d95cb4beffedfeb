//! evaluate: which queued orders can start, which end because of what the orders they
//! wait for did, and which keep waiting. Pure: no IO, so it is property-tested on its own.
//!
//! Rules, for a queued order:
//! - cancelled (`dependency_cancelled`) when a dependency was cancelled: only a stop
//!   cancels, and what waits on a stopped order is stopped too, whether or not it must
//!   succeed (a stop racing a pass ends the same way whichever comes first);
//! - with a `depends` condition: once every order it names has ended, ready if the
//!   condition holds, else skipped (`condition false: <expression>`); waiting before;
//! - with plain dependencies:
//!   - failed (`dependency_failed`) when a dependency failed or timed out and the order has
//!     `must_succeed = true`;
//!   - skipped (`dependency_skipped`) once all of them have ended and one was skipped
//!     (waiting for all keeps the outcome independent of which ends first: a failure
//!     among them still fails the order);
//!   - ready when it has no dependencies or all of them succeeded, or when all of them are
//!     terminal and the order has `must_succeed = false` (it runs whatever they did);
//!   - waiting otherwise.
//!
//! Every ending cascades: an order cancelled, failed or skipped this way counts as such
//! for its own dependents in the same evaluation, repeated until nothing changes.

use std::collections::HashMap;

use sluice_contract::condition::Condition;
use sluice_contract::result::{DEPENDENCY_CANCELLED, DEPENDENCY_FAILED, DEPENDENCY_SKIPPED};
use sluice_contract::{OrderNum, OrderStatus};

use crate::ports::OrderRecord;

/// The part of an order that evaluation looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The order.
    pub num: OrderNum,
    /// Its status now.
    pub status: OrderStatus,
    /// Whether it must succeed.
    pub must_succeed: bool,
    /// What it waits for.
    pub depends_on: Vec<OrderNum>,
    /// Its `depends` condition, if it has one instead of plain dependencies.
    pub condition: Option<Condition>,
}

impl From<&OrderRecord> for Node {
    fn from(record: &OrderRecord) -> Self {
        Node {
            num: record.plan.order_num,
            status: record.status,
            must_succeed: record.plan.must_succeed,
            depends_on: record.plan.depends_on.clone(),
            condition: record.plan.condition.clone(),
        }
    }
}

/// An order that evaluation ends without running it: its status and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The order.
    pub num: OrderNum,
    /// `failed`, `cancelled` or `skipped`.
    pub status: OrderStatus,
    /// Why, as its row and the done document say.
    pub reason: String,
}

/// What evaluation decided for the queued orders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Can start now.
    pub ready: Vec<OrderNum>,
    /// End now without running (including cascades), by order number.
    pub ended: Vec<Ending>,
    /// Keep waiting.
    pub waiting: Vec<OrderNum>,
}

/// How a queued order ends because of the orders it waits for, if it does now.
fn ending_of(
    node: &Node,
    status: &HashMap<OrderNum, OrderStatus>,
) -> Option<(OrderStatus, String)> {
    let deps = || node.depends_on.iter().map(|d| status.get(d).copied());
    if deps().any(|s| s == Some(OrderStatus::Cancelled)) {
        return Some((OrderStatus::Cancelled, DEPENDENCY_CANCELLED.to_owned()));
    }
    let all_ended = deps().all(|s| s.is_some_and(OrderStatus::is_terminal));
    if let Some(condition) = &node.condition {
        let holds = || {
            condition
                .expr
                .holds(&|num: &OrderNum| status.get(num).copied())
        };
        return (all_ended && !holds()).then(|| {
            (
                OrderStatus::Skipped,
                format!("condition false: {}", condition.text),
            )
        });
    }
    let is_failure =
        |s: Option<OrderStatus>| matches!(s, Some(OrderStatus::Failed | OrderStatus::TimedOut));
    if node.must_succeed && deps().any(is_failure) {
        return Some((OrderStatus::Failed, DEPENDENCY_FAILED.to_owned()));
    }
    (all_ended && deps().any(|s| s == Some(OrderStatus::Skipped)))
        .then(|| (OrderStatus::Skipped, DEPENDENCY_SKIPPED.to_owned()))
}

/// Applies the rules of the module docs to every queued order.
pub fn evaluate(nodes: &[Node]) -> Plan {
    let mut status: HashMap<OrderNum, OrderStatus> =
        nodes.iter().map(|n| (n.num, n.status)).collect();
    let mut plan = Plan::default();
    loop {
        let mut changed = false;
        for node in nodes {
            if status[&node.num] != OrderStatus::Queued {
                continue;
            }
            if let Some((ended, reason)) = ending_of(node, &status) {
                status.insert(node.num, ended);
                plan.ended.push(Ending {
                    num: node.num,
                    status: ended,
                    reason,
                });
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    for node in nodes {
        if status[&node.num] != OrderStatus::Queued {
            continue;
        }
        let dep_status = || node.depends_on.iter().map(|d| status.get(d).copied());
        let all_succeeded = dep_status().all(|s| s == Some(OrderStatus::Succeeded));
        let all_terminal = dep_status().all(|s| s.is_some_and(OrderStatus::is_terminal));
        // A condition that did not hold has ended the order above.
        let runs_whatever = !node.must_succeed || node.condition.is_some();
        if all_succeeded || (all_terminal && runs_whatever) {
            plan.ready.push(node.num);
        } else {
            plan.waiting.push(node.num);
        }
    }
    plan.ended.sort_by_key(|ending| ending.num);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;
    use proptest::prelude::*;
    use sluice_contract::condition::{Expr, Outcome, parse};

    fn n(i: usize) -> OrderNum {
        OrderNum::from_index(i)
    }

    fn node(i: usize, status: OrderStatus, must_succeed: bool, deps: &[usize]) -> Node {
        Node {
            num: n(i),
            status,
            must_succeed,
            depends_on: deps.iter().map(|&d| n(d)).collect(),
            condition: None,
        }
    }

    /// An order with a `depends` condition whose names are order indices (`0.succeeded`).
    fn conditional(i: usize, status: OrderStatus, text: &str) -> Node {
        let expr = parse(text)
            .unwrap()
            .resolve(&mut |name: &String| name.parse::<usize>().map(n))
            .unwrap();
        with_condition(i, status, text, expr)
    }

    fn with_condition(i: usize, status: OrderStatus, text: &str, expr: Expr<OrderNum>) -> Node {
        let mut depends_on: Vec<OrderNum> = expr.names().into_iter().copied().collect();
        depends_on.sort();
        depends_on.dedup();
        Node {
            num: n(i),
            status,
            must_succeed: true,
            depends_on,
            condition: Some(Condition {
                text: text.to_owned(),
                expr,
            }),
        }
    }

    fn ended_as(plan: &Plan, status: OrderStatus) -> Vec<OrderNum> {
        (plan.ended.iter())
            .filter(|ending| ending.status == status)
            .map(|ending| ending.num)
            .collect()
    }

    #[test]
    fn no_dependencies_means_ready() {
        let plan = evaluate(&[node(0, Queued, true, &[]), node(1, Running, true, &[])]);
        assert_eq!(plan.ready, vec![n(0)]);
    }

    #[test]
    fn running_dependency_means_waiting() {
        let plan = evaluate(&[node(0, Running, true, &[]), node(1, Queued, true, &[0])]);
        assert_eq!(plan.waiting, vec![n(1)]);
    }

    #[test]
    fn succeeded_dependencies_make_ready() {
        let plan = evaluate(&[
            node(0, Succeeded, true, &[]),
            node(1, Succeeded, true, &[]),
            node(2, Queued, true, &[0, 1]),
        ]);
        assert_eq!(plan.ready, vec![n(2)]);
    }

    #[test]
    fn failure_cascades_through_must_succeed_orders() {
        let plan = evaluate(&[
            node(0, Failed, true, &[]),
            node(1, Queued, true, &[0]),
            node(2, Queued, true, &[1]),
            node(3, Queued, false, &[2]),
        ]);
        assert_eq!(ended_as(&plan, Failed), vec![n(1), n(2)]);
        assert!(plan.ended.iter().all(|e| e.reason == DEPENDENCY_FAILED));
        // must_succeed=false runs once its dependencies are terminal, whatever they did.
        assert_eq!(plan.ready, vec![n(3)]);
    }

    #[test]
    fn timed_out_dependency_fails_dependents() {
        let plan = evaluate(&[node(0, TimedOut, true, &[]), node(1, Queued, true, &[0])]);
        assert_eq!(ended_as(&plan, Failed), vec![n(1)]);
    }

    /// A stop racing a pass: the pass that applies a stopped order's result must not fail
    /// its dependents (`dependency_failed`, the job `failed`) before the stop marks them.
    #[test]
    fn cancellation_cascades_to_every_dependent() {
        let plan = evaluate(&[
            node(0, Cancelled, true, &[]),
            node(1, Queued, true, &[0]),
            node(2, Queued, false, &[1]),
            node(3, Failed, true, &[]),
            node(4, Queued, true, &[3, 0]),
            conditional(5, Queued, "0.cancelled || 3.failed"),
        ]);
        assert_eq!(ended_as(&plan, Cancelled), vec![n(1), n(2), n(4), n(5)]);
        assert_eq!(plan.ended.len(), 4);
        assert!(plan.ready.is_empty());
    }

    #[test]
    fn optional_order_waits_for_all_dependencies() {
        let plan = evaluate(&[
            node(0, Failed, true, &[]),
            node(1, Running, true, &[]),
            node(2, Queued, false, &[0, 1]),
        ]);
        assert_eq!(plan.waiting, vec![n(2)]);
    }

    #[test]
    fn a_condition_waits_for_every_order_it_names_then_runs_or_skips() {
        let text = "0.succeeded && (1.failed || 1.skipped)";
        let waiting = evaluate(&[
            node(0, Succeeded, true, &[]),
            node(1, Running, true, &[]),
            conditional(2, Queued, text),
        ]);
        assert_eq!(waiting.waiting, vec![n(2)], "1 has not ended");
        let runs = evaluate(&[
            node(0, Succeeded, true, &[]),
            node(1, Failed, true, &[]),
            conditional(2, Queued, text),
        ]);
        assert_eq!(
            runs.ready,
            vec![n(2)],
            "a failure it asks for does not fail it"
        );
        let skips = evaluate(&[
            node(0, Succeeded, true, &[]),
            node(1, Succeeded, true, &[]),
            conditional(2, Queued, text),
        ]);
        assert_eq!(
            skips.ended,
            vec![Ending {
                num: n(2),
                status: Skipped,
                reason: format!("condition false: {text}"),
            }]
        );
    }

    #[test]
    fn a_skip_cascades_through_plain_dependencies_once_they_have_ended() {
        let plan = evaluate(&[
            node(0, Succeeded, true, &[]),
            conditional(1, Queued, "0.failed"),
            node(2, Queued, true, &[1]),
            node(3, Queued, false, &[2]),
            node(4, Queued, true, &[1, 5]),
            node(5, Running, true, &[]),
            conditional(6, Queued, "2.skipped && !0.failed"),
        ]);
        assert_eq!(ended_as(&plan, Skipped), vec![n(1), n(2), n(3)]);
        assert_eq!(plan.ended[1].reason, DEPENDENCY_SKIPPED);
        assert_eq!(plan.waiting, vec![n(4)], "5 has not ended");
        assert_eq!(plan.ready, vec![n(6)], "it asked for the skip");
        // A failure among the dependencies still fails a must_succeed order.
        let failed = evaluate(&[
            node(0, Skipped, true, &[]),
            node(1, Failed, true, &[]),
            node(2, Queued, true, &[0, 1]),
            node(3, Queued, false, &[0, 1]),
        ]);
        assert_eq!(ended_as(&failed, Failed), vec![n(2)]);
        assert_eq!(ended_as(&failed, Skipped), vec![n(3)]);
    }

    fn arb_outcome() -> impl Strategy<Value = Outcome> {
        proptest::sample::select(Outcome::ALL.to_vec())
    }

    fn arb_graph() -> impl Strategy<Value = Vec<Node>> {
        (1usize..10).prop_flat_map(|size| {
            proptest::collection::vec(
                (
                    proptest::sample::select(OrderStatus::ALL.to_vec()),
                    any::<bool>(),
                    proptest::collection::vec((0usize..10, arb_outcome(), 0u8..3), 0..4),
                    any::<bool>(),
                ),
                size,
            )
            .prop_map(move |raw| {
                raw.into_iter()
                    .enumerate()
                    .map(|(i, (status, must, deps, has_condition))| {
                        let deps: Vec<_> = deps.into_iter().filter(|&(d, ..)| d < i).collect();
                        let plain: Vec<usize> = deps.iter().map(|&(d, ..)| d).collect();
                        // A condition over the same orders: each term `&&`, `||` or `!`-ed in.
                        let expr = deps.iter().fold(None, |acc, &(d, outcome, op)| {
                            let term = Expr::Term(n(d), outcome);
                            Some(match (acc, op) {
                                (None, _) => term,
                                (Some(acc), 0) => Expr::And(Box::new(acc), Box::new(term)),
                                (Some(acc), 1) => Expr::Or(Box::new(acc), Box::new(term)),
                                (Some(acc), _) => {
                                    Expr::And(Box::new(acc), Box::new(Expr::Not(Box::new(term))))
                                }
                            })
                        });
                        match expr {
                            Some(expr) if has_condition => {
                                let text = expr.to_string();
                                let mut node = with_condition(i, status, &text, expr);
                                node.must_succeed = must;
                                node
                            }
                            _ => node(i, status, must, &plain),
                        }
                    })
                    .collect()
            })
        })
    }

    /// Each order's status once `plan` is applied.
    fn after(nodes: &[Node], plan: &Plan) -> Vec<Node> {
        let mut after = nodes.to_vec();
        for ending in &plan.ended {
            after[ending.num.index().unwrap()].status = ending.status;
        }
        after
    }

    proptest! {
        /// Invariant: every queued order lands in exactly one list, and no other order does.
        #[test]
        fn every_queued_order_is_classified_once(nodes in arb_graph()) {
            let plan = evaluate(&nodes);
            let queued: Vec<OrderNum> = nodes.iter().filter(|n| n.status == Queued).map(|n| n.num).collect();
            let ended = plan.ended.iter().map(|e| &e.num);
            let mut classified: Vec<OrderNum> = plan.ready.iter().chain(ended).chain(&plan.waiting).copied().collect();
            classified.sort();
            prop_assert_eq!(classified, queued);
        }

        /// Invariant: a ready order's dependencies all ended (counting those the same plan
        /// ends): all succeeded for a must_succeed order with plain dependencies, none
        /// skipped or cancelled for one that need not succeed, and its condition holds for
        /// one with a condition.
        #[test]
        fn ready_orders_have_satisfied_dependencies(nodes in arb_graph()) {
            let plan = evaluate(&nodes);
            let after = after(&nodes, &plan);
            let status = |num: &OrderNum| after[num.index().unwrap()].status;
            for num in &plan.ready {
                let node = &after[num.index().unwrap()];
                prop_assert!(node.depends_on.iter().all(|d| status(d).is_terminal()));
                prop_assert!(node.depends_on.iter().all(|d| status(d) != Cancelled));
                match &node.condition {
                    Some(condition) => prop_assert!(condition.expr.holds(&|d: &OrderNum| Some(status(d)))),
                    None if node.must_succeed => prop_assert!(node.depends_on.iter().all(|d| status(d) == Succeeded)),
                    None => prop_assert!(node.depends_on.iter().all(|d| status(d) != Skipped)),
                }
            }
        }

        /// Invariant: after applying the plan, evaluating again ends nothing more (the
        /// cascade is complete).
        #[test]
        fn cascades_reach_a_fixpoint(nodes in arb_graph()) {
            let plan = evaluate(&nodes);
            let again = evaluate(&after(&nodes, &plan));
            prop_assert!(again.ended.is_empty(), "{:?}", again.ended);
        }
    }
}
