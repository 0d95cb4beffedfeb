//! evaluate: which queued orders can start, which must fail because a dependency did not
//! succeed, and which keep waiting. Pure: no IO, so it is property-tested on its own.
//!
//! Rules, for a queued order:
//! - cancelled (`dependency_cancelled`) when a dependency was cancelled: only a stop
//!   cancels, and what waits on a stopped order is stopped too, whether or not it must
//!   succeed (a stop racing a pass ends the same way whichever comes first);
//! - ready when it has no dependencies or all of them succeeded, or when all of them are
//!   terminal and the order has `must_succeed = false` (it runs whatever they did);
//! - failed (`dependency_failed`) when a dependency failed or timed out and the order has
//!   `must_succeed = true`;
//! - waiting otherwise.
//!
//! Both cascade: an order cancelled or failed this way does the same to its own dependents
//! in the same evaluation, repeated until nothing changes.

use std::collections::HashMap;

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
}

impl From<&OrderRecord> for Node {
    fn from(record: &OrderRecord) -> Self {
        Node {
            num: record.plan.order_num,
            status: record.status,
            must_succeed: record.plan.must_succeed,
            depends_on: record.plan.depends_on.clone(),
        }
    }
}

/// What evaluation decided for the queued orders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Can start now.
    pub ready: Vec<OrderNum>,
    /// Fail with `dependency_failed` (including cascades).
    pub dependency_failed: Vec<OrderNum>,
    /// Cancelled with `dependency_cancelled` (including cascades).
    pub dependency_cancelled: Vec<OrderNum>,
    /// Keep waiting.
    pub waiting: Vec<OrderNum>,
}

/// Applies the rules of the module docs to every queued order.
pub fn evaluate(nodes: &[Node]) -> Plan {
    let mut status: HashMap<OrderNum, OrderStatus> =
        nodes.iter().map(|n| (n.num, n.status)).collect();
    let is_failure = |s: OrderStatus| matches!(s, OrderStatus::Failed | OrderStatus::TimedOut);
    let mut plan = Plan::default();
    loop {
        let mut changed = false;
        for node in nodes {
            if status[&node.num] != OrderStatus::Queued {
                continue;
            }
            let deps = || {
                node.depends_on
                    .iter()
                    .filter_map(|d| status.get(d).copied())
            };
            if deps().any(|s| s == OrderStatus::Cancelled) {
                status.insert(node.num, OrderStatus::Cancelled);
                plan.dependency_cancelled.push(node.num);
                changed = true;
            } else if node.must_succeed && deps().any(is_failure) {
                status.insert(node.num, OrderStatus::Failed);
                plan.dependency_failed.push(node.num);
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
        if all_succeeded || (all_terminal && !node.must_succeed) {
            plan.ready.push(node.num);
        } else {
            plan.waiting.push(node.num);
        }
    }
    plan.dependency_failed.sort();
    plan.dependency_cancelled.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;
    use proptest::prelude::*;

    fn n(i: usize) -> OrderNum {
        OrderNum::from_index(i)
    }

    fn node(i: usize, status: OrderStatus, must_succeed: bool, deps: &[usize]) -> Node {
        Node {
            num: n(i),
            status,
            must_succeed,
            depends_on: deps.iter().map(|&d| n(d)).collect(),
        }
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
        assert_eq!(plan.dependency_failed, vec![n(1), n(2)]);
        // must_succeed=false runs once its dependencies are terminal, whatever they did.
        assert_eq!(plan.ready, vec![n(3)]);
    }

    #[test]
    fn timed_out_dependency_fails_dependents() {
        let plan = evaluate(&[node(0, TimedOut, true, &[]), node(1, Queued, true, &[0])]);
        assert_eq!(plan.dependency_failed, vec![n(1)]);
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
        ]);
        assert_eq!(plan.dependency_cancelled, vec![n(1), n(2), n(4)]);
        assert!(plan.dependency_failed.is_empty() && plan.ready.is_empty());
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

    fn arb_graph() -> impl Strategy<Value = Vec<Node>> {
        (1usize..10).prop_flat_map(|size| {
            proptest::collection::vec(
                (
                    proptest::sample::select(OrderStatus::ALL.to_vec()),
                    any::<bool>(),
                    proptest::collection::vec(0usize..10, 0..4),
                ),
                size,
            )
            .prop_map(move |raw| {
                raw.into_iter()
                    .enumerate()
                    .map(|(i, (status, must, deps))| {
                        let deps: Vec<usize> = deps.into_iter().filter(|&d| d < i).collect();
                        node(i, status, must, &deps)
                    })
                    .collect()
            })
        })
    }

    proptest! {
        /// Invariant: every queued order lands in exactly one list, and no other order does.
        #[test]
        fn every_queued_order_is_classified_once(nodes in arb_graph()) {
            let plan = evaluate(&nodes);
            let queued: Vec<OrderNum> = nodes.iter().filter(|n| n.status == Queued).map(|n| n.num).collect();
            let mut classified: Vec<OrderNum> = plan.ready.iter().chain(&plan.dependency_failed).chain(&plan.dependency_cancelled).chain(&plan.waiting).copied().collect();
            classified.sort();
            prop_assert_eq!(classified, queued);
        }

        /// Invariant: a ready order's dependencies all succeeded, unless it need not succeed,
        /// in which case they are all terminal (counting those the same plan fails).
        #[test]
        fn ready_orders_have_satisfied_dependencies(nodes in arb_graph()) {
            let plan = evaluate(&nodes);
            for num in &plan.ready {
                let node = nodes.iter().find(|n| n.num == *num).unwrap();
                for dep in &node.depends_on {
                    let dep_status = if plan.dependency_failed.contains(dep) {
                        Failed
                    } else if plan.dependency_cancelled.contains(dep) {
                        Cancelled
                    } else {
                        nodes.iter().find(|n| n.num == *dep).unwrap().status
                    };
                    if node.must_succeed {
                        prop_assert_eq!(dep_status, Succeeded);
                    } else {
                        prop_assert!(dep_status.is_terminal());
                    }
                }
            }
        }

        /// Invariant: after applying the plan, no must_succeed queued order still has a failed
        /// dependency (the cascade is complete).
        #[test]
        fn cascades_reach_a_fixpoint(nodes in arb_graph()) {
            let plan = evaluate(&nodes);
            let mut after = nodes.clone();
            for node in after.iter_mut() {
                if plan.dependency_failed.contains(&node.num) {
                    node.status = Failed;
                }
                if plan.dependency_cancelled.contains(&node.num) {
                    node.status = Cancelled;
                }
            }
            let again = evaluate(&after);
            prop_assert!(again.dependency_failed.is_empty() && again.dependency_cancelled.is_empty());
        }
    }
}
