//! The dependency graph: each order's `dependencies` resolved to order numbers, and the graph
//! checked for cycles.
//!
//! A dependency names another order by its queue id (compared after normalising numbers, so
//! `"0001"`, `"1"` and `1` are the same) or by its name; a reference that is both, to two
//! different orders, is refused as ambiguous rather than guessed at. A job whose orders wait
//! on each other in a cycle would never finish, so a cycle is refused too, and reported as the
//! path of order names that closes it (`a -> c -> b -> a`).

use std::collections::HashMap;

use super::{OrderCtx, ValidOrder, ValidationError, normalise_ref, orders_label};
use crate::condition::{self, Condition};
use crate::ids::OrderNum;
use crate::job::OrderSpec;

/// The orders `order` (checked from `spec`) waits for, sorted, without repeats, and its
/// condition when it has `depends` instead of `dependencies`.
pub(super) fn resolve_dependencies(
    order: &ValidOrder,
    spec: &OrderSpec,
    orders: &[ValidOrder],
    by_queue_id: &HashMap<String, usize>,
    by_name: &HashMap<String, usize>,
) -> Result<(Vec<OrderNum>, Option<Condition>), ValidationError> {
    let ctx = OrderCtx {
        num: order.plan.order_num,
        name: order.plan.order_name.clone(),
    };
    let (field, mut resolved, condition) = match &spec.depends {
        None => {
            let mut resolved = Vec::with_capacity(spec.dependencies.len());
            for reference in &spec.dependencies {
                let index = resolve_one(
                    &ctx,
                    "dependencies",
                    reference.as_str(),
                    orders,
                    by_queue_id,
                    by_name,
                )?;
                resolved.push(orders[index].plan.order_num);
            }
            ("dependencies", resolved, None)
        }
        Some(_) if !spec.dependencies.is_empty() => {
            return Err(ctx.error(
                "depends",
                "`depends` and `dependencies` are both given: keep one (`depends` waits for every order it names)",
            ));
        }
        Some(text) => {
            let expr = condition::parse(text)
                .map_err(|e| ctx.error("depends", format!("syntax error at {e}")))?;
            let expr = expr.resolve(&mut |name: &String| {
                resolve_one(&ctx, "depends", name, orders, by_queue_id, by_name)
                    .map(|index| orders[index].plan.order_num)
            })?;
            let resolved = expr.names().into_iter().copied().collect();
            let condition = Condition {
                text: text.clone(),
                expr,
            };
            ("depends", resolved, Some(condition))
        }
    };
    if resolved.contains(&order.plan.order_num) {
        return Err(ctx.error(
            field,
            "dependency cycle: the order depends on itself".to_owned(),
        ));
    }
    resolved.sort();
    resolved.dedup();
    Ok((resolved, condition))
}

/// The index of the order `reference` names, by queue id or by name.
pub(super) fn resolve_one(
    ctx: &OrderCtx,
    field: &str,
    reference: &str,
    orders: &[ValidOrder],
    by_queue_id: &HashMap<String, usize>,
    by_name: &HashMap<String, usize>,
) -> Result<usize, ValidationError> {
    let by_id = by_queue_id.get(&normalise_ref(reference)).copied();
    let by_order_name = by_name.get(reference).copied();
    match (by_id, by_order_name) {
        (Some(a), Some(b)) if a != b => Err(ctx.error(
            field,
            format!(
                "dependency {reference:?} is ambiguous: it is the queue_id of order {} and the order_name of order {}",
                orders_label(orders, a),
                orders_label(orders, b)
            ),
        )),
        (Some(index), _) | (None, Some(index)) => Ok(index),
        (None, None) => Err(ctx.error(
            field,
            format!("unknown dependency {reference:?}: no order has that queue_id or order_name"),
        )),
    }
}

/// Finds a cycle with a depth-first search and reports it as a path of order names.
pub(super) fn check_acyclic(orders: &[ValidOrder]) -> Result<(), ValidationError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; orders.len()];
    for start in 0..orders.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (order index, next dependency to visit).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let deps = &orders[node].plan.depends_on;
            if *next == deps.len() {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            }
            let dep = deps[*next].index().expect("dependencies are real orders");
            *next += 1;
            match marks[dep] {
                Mark::Done => {}
                Mark::New => {
                    marks[dep] = Mark::OnPath;
                    stack.push((dep, 0));
                }
                Mark::OnPath => {
                    let from = stack.iter().position(|&(n, _)| n == dep).expect("on path");
                    let mut path: Vec<&str> = stack[from..]
                        .iter()
                        .map(|&(n, _)| orders[n].plan.order_name.as_str())
                        .collect();
                    path.push(&orders[dep].plan.order_name);
                    let first = &orders[dep];
                    let field = match first.plan.condition {
                        Some(_) => "depends",
                        None => "dependencies",
                    };
                    return Err(OrderCtx {
                        num: first.plan.order_num,
                        name: first.plan.order_name.clone(),
                    }
                    .error(field, format!("dependency cycle: {}", path.join(" -> "))));
                }
            }
        }
    }
    Ok(())
}

/// The orders in waves, by index: each order in the wave after the last of those it waits
/// for, so a wave's orders can run at the same time and there are as many waves as the
/// job's longest chain has orders. Orders keep the job's order within a wave.
pub(super) fn waves(orders: &[ValidOrder]) -> Vec<Vec<usize>> {
    let mut waiting: Vec<usize> = orders.iter().map(|o| o.plan.depends_on.len()).collect();
    let mut dependents = vec![Vec::new(); orders.len()];
    for (index, order) in orders.iter().enumerate() {
        for dependency in order.plan.depends_on.iter().filter_map(|d| d.index()) {
            dependents[dependency].push(index);
        }
    }
    let mut wave: Vec<usize> = (0..orders.len()).filter(|&i| waiting[i] == 0).collect();
    let mut waves = Vec::new();
    while !wave.is_empty() {
        let mut next = Vec::new();
        for &index in &wave {
            for &dependent in &dependents[index] {
                waiting[dependent] -= 1;
                if waiting[dependent] == 0 {
                    next.push(dependent);
                }
            }
        }
        next.sort_unstable();
        waves.push(std::mem::replace(&mut wave, next));
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{check, error_of};

    #[test]
    fn dependencies_resolve_by_name_padded_number_or_queue_id() {
        let job = check(
            r#"{"orders":[
                {"cmds":["true"],"timeout":5,"order_name":"build"},
                {"cmds":["true"],"timeout":5,"queue_id":"lint"},
                {"cmds":["true"],"timeout":5,"dependencies":["build","lint","0001",1]}]}"#,
        )
        .unwrap();
        assert_eq!(
            job.orders[2].plan.depends_on,
            vec![OrderNum::from_index(0), OrderNum::from_index(1)]
        );
    }

    #[test]
    fn unknown_dependency_names_the_reference() {
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"order_name":"a","dependencies":["biuld"]}]}"#,
        );
        assert!(
            e.contains("order 0001 (a)") && e.contains("unknown dependency \"biuld\""),
            "{e}"
        );
    }

    #[test]
    fn a_condition_waits_for_every_order_it_names() {
        let job = check(
            r#"{"orders":[
                {"cmds":["true"],"timeout":5,"order_name":"build"},
                {"cmds":["true"],"timeout":5,"queue_id":"lint-7"},
                {"cmds":["true"],"timeout":5,"depends":"build.succeeded && (lint-7.failed || !build.ended)"}]}"#,
        )
        .unwrap();
        let plan = &job.orders[2].plan;
        assert_eq!(
            plan.depends_on,
            vec![OrderNum::from_index(0), OrderNum::from_index(1)]
        );
        let condition = plan.condition.as_ref().unwrap();
        assert_eq!(
            condition.text,
            "build.succeeded && (lint-7.failed || !build.ended)"
        );
        assert_eq!(
            condition.expr.to_string(),
            "0001.succeeded && (0002.failed || !0001.ended)"
        );
        assert!(job.orders[0].plan.condition.is_none());
    }

    #[test]
    fn bad_conditions_name_the_order_the_field_and_the_column() {
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"order_name":"a"},
                {"cmds":["true"],"timeout":5,"order_name":"b","depends":"a.succeeded &&& a.failed"}]}"#,
        );
        assert!(
            e.contains("order 0002 (b)") && e.contains("`depends`"),
            "{e}"
        );
        assert!(e.contains("syntax error at column 15"), "{e}");
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"order_name":"a","depends":"nope.ended"}]}"#,
        );
        assert!(e.contains("unknown dependency \"nope\""), "{e}");
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"order_name":"a"},
                {"cmds":["true"],"timeout":5,"dependencies":["a"],"depends":"a.ended"}]}"#,
        );
        assert!(
            e.contains("`depends` and `dependencies` are both given"),
            "{e}"
        );
        let e = error_of(
            r#"{"orders":[
                {"cmds":["true"],"timeout":5,"order_name":"a","depends":"b.failed"},
                {"cmds":["true"],"timeout":5,"order_name":"b","dependencies":["a"]}]}"#,
        );
        assert!(e.contains("dependency cycle: a -> b -> a"), "{e}");
        assert!(e.contains("`depends`"), "{e}");
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"order_name":"a","depends":"a.failed || 1.ended"}]}"#,
        );
        assert!(e.contains("depends on itself"), "{e}");
    }

    #[test]
    fn waves_put_each_order_after_the_last_it_waits_for() {
        // 1 → 2 → 4, 1 → 3, 5 alone, 6 after 4 and 5: the longest chain is 1, 2, 4, 6.
        let job = check(
            r#"{"orders":[
                {"cmds":["true"],"timeout":5},
                {"cmds":["true"],"timeout":5,"dependencies":[1]},
                {"cmds":["true"],"timeout":5,"dependencies":[1]},
                {"cmds":["true"],"timeout":5,"dependencies":[2,1]},
                {"cmds":["true"],"timeout":5},
                {"cmds":["true"],"timeout":5,"dependencies":[5,4]}]}"#,
        )
        .unwrap();
        assert_eq!(
            waves(&job.orders),
            vec![vec![0, 4], vec![1, 2], vec![3], vec![5]]
        );
        // An order may wait for one written after it.
        let job = check(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"dependencies":[2]},{"cmds":["true"],"timeout":5}]}"#,
        )
        .unwrap();
        assert_eq!(waves(&job.orders), vec![vec![1], vec![0]]);
    }

    #[test]
    fn cycles_are_reported_as_paths() {
        let e = error_of(
            r#"{"orders":[
                {"cmds":["true"],"timeout":5,"order_name":"a","dependencies":["c"]},
                {"cmds":["true"],"timeout":5,"order_name":"b","dependencies":["a"]},
                {"cmds":["true"],"timeout":5,"order_name":"c","dependencies":["b"]}]}"#,
        );
        assert!(e.contains("dependency cycle: a -> c -> b -> a"), "{e}");
    }

    #[test]
    fn cycles_through_default_queue_ids_are_found() {
        let e = error_of(
            r#"{"orders":[{"cmds":["true"],"timeout":5,"dependencies":[2]},{"cmds":["true"],"timeout":5,"dependencies":["1"]}]}"#,
        );
        assert!(
            e.contains("dependency cycle: order-1 -> order-2 -> order-1"),
            "{e}"
        );
        let e = error_of(r#"{"orders":[{"cmds":["true"],"timeout":5,"dependencies":["0001"]}]}"#);
        assert!(e.contains("depends on itself"), "{e}");
    }
}

#[cfg(test)]
mod proptests {
    use crate::job::{JobSpec, OrderSpec, Reference};
    use crate::validate::{ValidateOptions, validate};
    use proptest::prelude::*;

    fn job_with_edges(n: usize, edges: &[(usize, usize)]) -> JobSpec {
        let mut orders: Vec<OrderSpec> = (0..n)
            .map(|_| OrderSpec {
                cmds: Some(vec!["true".into()]),
                timeout: Some(5),
                ..OrderSpec::default()
            })
            .collect();
        for &(from, to) in edges {
            orders[from]
                .dependencies
                .push(Reference((to + 1).to_string()));
        }
        JobSpec {
            orders,
            ..JobSpec::default()
        }
    }

    proptest! {
        /// Invariant: a graph whose edges all point to earlier orders is a DAG and validates;
        /// adding one edge from an order to one of its transitive dependents makes a cycle
        /// that validation reports.
        #[test]
        fn forward_edges_validate_and_a_back_edge_is_a_cycle(
            n in 2usize..12,
            raw in proptest::collection::vec((0usize..100, 0usize..100), 0..30),
        ) {
            let edges: Vec<(usize, usize)> = raw
                .iter()
                .map(|&(a, b)| (a % n, b % n))
                .filter(|&(a, b)| a > b)
                .collect();
            let options = ValidateOptions::local("p");
            let dag = job_with_edges(n, &edges);
            prop_assert!(validate(&dag, &options).is_ok());
            if let Some(&(from, to)) = edges.first() {
                // `from` depends on `to`; make `to` depend on `from`.
                let mut cyclic = edges.clone();
                cyclic.push((to, from));
                let err = validate(&job_with_edges(n, &cyclic), &options).unwrap_err();
                prop_assert!(err.message.contains("dependency cycle"), "{}", err);
            }
        }
    }
}
