//! The AWS backends' tests against moto server, one module per concern, in one test
//! binary (linking the AWS SDK and wasmtime is most of a test build).

mod binaries;
mod cli;
mod deployed;
mod end_to_end;
mod handlers;
mod moto;
mod support;
mod template;
