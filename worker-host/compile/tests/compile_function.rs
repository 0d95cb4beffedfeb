//! The compile function's work, through its file-path stand-in for URLs: what it stores
//! for a module that compiles, one at fault, one it cannot read, and one still compiling
//! when its orders' longest timeout is up (in a child process, killed then); and its own
//! binary as the compiler, as the Lambda runs it.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use data_encoding::HEXLOWER;
use sha2::{Digest, Sha256};
use sluice_compile::{CompileError, Compiled, compile_for_run};
use sluice_contract::RunId;
use sluice_contract::dispatch::{COMPILE_FAILED, Capability, CompileRequest};
use sluice_worker::io::FileIo;
use sluice_worker::testing::StuckCompiler;
use sluice_worker::wasm::{CompileIn, compile_for_workers};

/// A request for `module` (stored in `folder` as `module.wasm`, named by `sha256_of`'s
/// digest), its code going to `folder/code.cwasm`.
fn request(folder: &tempfile::TempDir, module: &[u8], sha256_of: &[u8]) -> CompileRequest {
    let path = |name: &str| Capability::new(folder.path().join(name).display().to_string());
    std::fs::write(folder.path().join("module.wasm"), module).unwrap();
    CompileRequest {
        run_id: RunId::generate(),
        module_name: "run.wasm".to_owned(),
        module_url: path("module.wasm"),
        module_sha256: HEXLOWER.encode(&Sha256::digest(sha256_of)),
        metered: false,
        timeout: 60,
        code_url: path("code.cwasm"),
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// A minute from now.
fn in_a_minute() -> Instant {
    Instant::now() + MINUTE
}

/// Carries out `request` in this process, with a minute to compile.
async fn carry_out(request: &CompileRequest) -> Result<Compiled, CompileError> {
    compile_for_run(request, &FileIo, &CompileIn::ThisProcess, in_a_minute()).await
}

fn stored(folder: &tempfile::TempDir) -> Vec<u8> {
    std::fs::read(folder.path().join("code.cwasm")).unwrap()
}

fn start_only() -> Vec<u8> {
    wat::parse_str("(module (func (export \"_start\")))").unwrap()
}

#[tokio::test]
async fn a_module_is_compiled_once_and_its_code_stored() {
    let folder = tempfile::tempdir().unwrap();
    let request = request(&folder, &start_only(), &start_only());
    assert_eq!(carry_out(&request).await.unwrap(), Compiled::Stored);
    let code = stored(&folder);
    assert!(
        code.starts_with(b"\x7fELF"),
        "wasmtime's code is an ELF object"
    );
    // Invoked again (Lambda's retry): the code stands.
    assert_eq!(carry_out(&request).await.unwrap(), Compiled::AlreadyThere);
    assert_eq!(stored(&folder), code);
}

#[tokio::test]
async fn an_invalid_module_gets_its_reason_stored_for_its_orders() {
    let folder = tempfile::tempdir().unwrap();
    let module = b"\0asm\x01\0\0\0\x7f".to_vec();
    let compiled = carry_out(&request(&folder, &module, &module))
        .await
        .unwrap();
    let Compiled::Refused(reason) = compiled else {
        panic!("{compiled:?}");
    };
    assert!(reason.starts_with("module run.wasm: invalid: "), "{reason}");
    assert_eq!(
        stored(&folder),
        [COMPILE_FAILED, reason.as_bytes()].concat()
    );
}

#[tokio::test]
async fn a_module_other_than_the_one_packaged_is_not_compiled() {
    let folder = tempfile::tempdir().unwrap();
    let compiled = carry_out(&request(&folder, &start_only(), b"another"))
        .await
        .unwrap();
    let Compiled::Refused(reason) = compiled else {
        panic!("{compiled:?}");
    };
    assert!(
        reason.contains("is not the one init-job packaged"),
        "{reason}"
    );
    assert!(stored(&folder).starts_with(COMPILE_FAILED));
}

#[tokio::test]
async fn a_module_that_cannot_be_read_stores_nothing_and_fails_the_invocation() {
    let folder = tempfile::tempdir().unwrap();
    let mut request = request(&folder, b"", b"");
    request.module_url = Capability::new("/nonexistent/module.wasm");
    let error = carry_out(&request).await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("reading module run.wasm of run "),
        "{error}"
    );
    assert!(!folder.path().join("code.cwasm").exists());
}

#[tokio::test]
async fn the_functions_own_binary_compiles_in_a_child_for_any_cpu() {
    let folder = tempfile::tempdir().unwrap();
    let module = wat::parse_str("(module (func (export \"_start\") (loop br 0)))").unwrap();
    let mut request = request(&folder, &module, &module);
    request.metered = true;
    let compiler = CompileIn::Child(PathBuf::from(env!("CARGO_BIN_EXE_compile")));
    let compiled = compile_for_run(&request, &FileIo, &compiler, in_a_minute())
        .await
        .unwrap();
    assert_eq!(compiled, Compiled::Stored);
    // The very code compiled here for AWS's CPUs (not for this one), fuel metered.
    let here = compile_for_workers("run.wasm", module, true, &CompileIn::ThisProcess)
        .await
        .unwrap();
    assert!(stored(&folder) == here);
}

/// wasmtime cannot interrupt a compilation: one still running when its orders' longest
/// timeout is up is killed, and that is stored as the module's reason.
#[tokio::test]
async fn a_compilation_past_the_orders_timeout_is_killed_and_the_reason_stored() {
    let folder = tempfile::tempdir().unwrap();
    let compiler = StuckCompiler::in_folder(folder.path());
    let mut request = request(&folder, &start_only(), &start_only());
    request.timeout = 1;
    let child = CompileIn::Child(compiler.path.clone());
    let compiled = compile_for_run(&request, &FileIo, &child, in_a_minute())
        .await
        .unwrap();
    let reason = "module run.wasm: compiling it took more than 1 s, the longest its orders may run";
    assert_eq!(compiled, Compiled::Refused(reason.to_owned()));
    assert_eq!(
        stored(&folder),
        [COMPILE_FAILED, reason.as_bytes()].concat()
    );
    compiler.assert_stopped().await;
}
