//! The rules on an order's `inputs`: each variable a name an environment can hold, not one
//! of Sluice's own nor one of the order's `env_vars`; each source `<order>.<output>` naming
//! one of the order's ancestors (an order that has ended when this one starts) and an
//! output name; a WebAssembly order lists each variable in `wasm.env` too (it sees no
//! variable it does not list). Checked once the graph is known.

use std::collections::{HashMap, HashSet};

use super::{OrderCtx, ValidOrder, ValidationError, graph, orders_label};
use crate::credentials::is_variable_name;
use crate::job::OrderSpec;
use crate::manifest::Task;
use crate::outputs::{Input, MAX_INPUTS, MAX_NAME_BYTES, is_output_name};

/// The inputs of `orders[index]` (checked from `spec`), sorted by variable.
pub(super) fn resolve_inputs(
    index: usize,
    spec: &OrderSpec,
    orders: &[ValidOrder],
    by_queue_id: &HashMap<String, usize>,
    by_name: &HashMap<String, usize>,
) -> Result<Vec<Input>, ValidationError> {
    if spec.inputs.is_empty() {
        return Ok(Vec::new());
    }
    let order = &orders[index];
    let ctx = OrderCtx {
        num: order.plan.order_num,
        name: order.plan.order_name.clone(),
    };
    if spec.inputs.len() > MAX_INPUTS {
        return Err(ctx.error(
            "inputs",
            format!(
                "{} inputs; an order may take at most {MAX_INPUTS}",
                spec.inputs.len()
            ),
        ));
    }
    let ancestors = ancestors(orders, index);
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for (env, source) in &spec.inputs {
        let field = format!("inputs.{env}");
        if !is_variable_name(env) || env.len() > MAX_NAME_BYTES {
            return Err(ctx.error(
                &field,
                format!("{env:?} is not a valid variable name (at most {MAX_NAME_BYTES} bytes, without `=`)"),
            ));
        }
        if env.starts_with("SLUICE_") || env == "TIMEOUT" {
            return Err(ctx.error(&field, format!("{env} is set by Sluice for every order")));
        }
        if order.env_vars.contains_key(env) {
            return Err(ctx.error(
                &field,
                format!("{env} is also one of the order's env_vars: keep one"),
            ));
        }
        if let Task::Wasm(wasm) = &order.task
            && !wasm.env.contains(env)
        {
            return Err(ctx.error(
                &field,
                format!("{env} must also be listed in wasm.env for the module to see it"),
            ));
        }
        let Some((producer, output)) = source.rsplit_once('.') else {
            return Err(ctx.error(
                &field,
                format!("{source:?} must be `<order>.<output>` (an order name or queue_id, a dot, an output name)"),
            ));
        };
        if !is_output_name(output) {
            return Err(ctx.error(
                &field,
                format!("{output:?} is not an output name (letters, digits and `_`, not starting with a digit)"),
            ));
        }
        let from = graph::resolve_one(&ctx, &field, producer, orders, by_queue_id, by_name)?;
        if !ancestors.contains(&from) {
            return Err(ctx.error(
                &field,
                format!(
                    "order {} is not among the orders this one waits for (directly or not): add it to dependencies or depends",
                    orders_label(orders, from)
                ),
            ));
        }
        inputs.push(Input {
            env: env.clone(),
            source: source.clone(),
            order_num: orders[from].plan.order_num,
            output: output.to_owned(),
        });
    }
    Ok(inputs)
}

/// The indexes of the orders `orders[index]` waits for, directly or not (the graph is
/// acyclic).
fn ancestors(orders: &[ValidOrder], index: usize) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut stack = vec![index];
    while let Some(at) = stack.pop() {
        for dep in &orders[at].plan.depends_on {
            let dep = dep.index().expect("dependencies are real orders");
            if seen.insert(dep) {
                stack.push(dep);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::super::{check, error_of};
    use super::*;
    use crate::ids::OrderNum;

    #[test]
    fn inputs_resolve_to_ancestors_outputs() {
        let job = check(
            r#"{"orders":[
              {"order_name":"plan","queue_id":"p","cmds":["true"],"timeout":5},
              {"order_name":"mid","cmds":["true"],"timeout":5,"dependencies":["plan"]},
              {"order_name":"apply","cmds":["true"],"timeout":5,"depends":"mid.succeeded",
               "inputs":{"PLAN":"plan.plan_file","ALSO":"p.summary","MID":"mid.x"}}]}"#,
        )
        .unwrap();
        let inputs = &job.orders[2].plan.inputs;
        assert_eq!(
            inputs.iter().map(|i| i.env.as_str()).collect::<Vec<_>>(),
            ["ALSO", "MID", "PLAN"]
        );
        assert_eq!(
            inputs.iter().map(|i| i.order_num).collect::<Vec<_>>(),
            [
                OrderNum::from_index(0),
                OrderNum::from_index(1),
                OrderNum::from_index(0)
            ]
        );
        assert_eq!(inputs[2].output, "plan_file");
        assert_eq!(inputs[2].source, "plan.plan_file");
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let job = |order: &str| {
            format!(
                r#"{{"orders":[{{"order_name":"plan","cmds":["true"],"timeout":5}},
                   {{"order_name":"other","cmds":["true"],"timeout":5}},
                   {{"order_name":"c","cmds":["true"],"timeout":5,"dependencies":["plan"],{order}}}]}}"#
            )
        };
        let long_name = format!(r#""inputs":{{"{}":"plan.x"}}"#, "V".repeat(129));
        let cases = [
            (
                r#""inputs":{"A":"other.x"}"#,
                "inputs.A`: order 0002 (other) is not among",
            ),
            (
                r#""inputs":{"A":"nobody.x"}"#,
                "inputs.A`: unknown dependency \"nobody\"",
            ),
            (r#""inputs":{"A":"plan"}"#, "must be `<order>.<output>`"),
            (
                r#""inputs":{"A":"plan.1x"}"#,
                "\"1x\" is not an output name",
            ),
            (
                r#""inputs":{"A=B":"plan.x"}"#,
                "is not a valid variable name",
            ),
            (r#""inputs":{"SLUICE_X":"plan.x"}"#, "set by Sluice"),
            (long_name.as_str(), "at most 128 bytes"),
            (r#""inputs":{"A":"c.x"}"#, "0003 (c) is not among"),
            (
                r#""inputs":{"A":"plan.x"},"env_vars":{"A":"1"}"#,
                "also one of the order's env_vars",
            ),
        ];
        for (order, expected) in cases {
            let error = error_of(&job(order));
            assert!(error.contains(expected), "{order}: {error}");
            assert!(error.starts_with("order 0003 (c)"), "{error}");
        }
        let many: Vec<String> = (0..=MAX_INPUTS)
            .map(|i| format!(r#""V{i}":"plan.x""#))
            .collect();
        let error = error_of(&job(&format!(r#""inputs":{{{}}}"#, many.join(","))));
        assert!(error.contains("at most 64"), "{error}");
    }

    #[test]
    fn a_module_must_list_its_inputs() {
        let job = |env: &str| {
            format!(
                r#"{{"orders":[{{"order_name":"plan","cmds":["true"],"timeout":5}},
                   {{"wasm":{{"module":"m.wasm","env":[{env}]}},"code_dir":".","timeout":5,
                     "dependencies":["plan"],"inputs":{{"A":"plan.x"}}}}]}}"#
            )
        };
        assert!(error_of(&job("")).contains("inputs.A`: A must also be listed in wasm.env"));
        check(&job(r#""A""#)).unwrap();
    }
}
