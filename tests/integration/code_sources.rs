//! Orders take their code from a local folder or a zip (path or `file://` URL), with file
//! modes kept; a zip with an entry escaping the code root is refused before anything runs.

use std::io::Write;
use std::path::Path;

use crate::util::{Sandbox, done_of, succeeded};
use sluice_contract::JobStatus;
use zip::write::SimpleFileOptions;

fn write_zip(path: &Path, entries: &[(&str, &str, u32)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, content, mode) in entries {
        zip.start_file(*name, SimpleFileOptions::default().unix_permissions(*mode))
            .unwrap();
        zip.write_all(content.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn zips_by_path_and_by_file_url_become_the_orders_code() {
    let sandbox = Sandbox::new();
    let zip = sandbox.path().join("code.zip");
    write_zip(
        &zip,
        &[
            (
                "bin/run.sh",
                "#!/bin/sh\necho \"read: $(cat data/input.txt)\"\n",
                0o755,
            ),
            ("data/input.txt", "zipped data", 0o644),
        ],
    );
    let job = format!(
        r#"{{"orders": [
            {{"order_name": "by-path", "s3_location": "code.zip", "cmds": ["./bin/run.sh"], "timeout": 10}},
            {{"order_name": "by-url", "s3_location": "file://{}", "cmds": ["./bin/run.sh"], "timeout": 10}}
        ]}}"#,
        zip.display()
    );
    let job = sandbox.write_job("job.json", &job);
    let output = sandbox.run(&job, &[]);
    let done = succeeded(&output);
    for name in ["by-path", "by-url"] {
        assert!(
            sandbox.log_of(&done, name).contains("read: zipped data"),
            "{name}"
        );
    }
}

#[test]
fn a_zip_entry_escaping_the_code_root_is_refused() {
    let sandbox = Sandbox::new();
    write_zip(
        &sandbox.path().join("evil.zip"),
        &[("../../escape.sh", "echo gotcha", 0o755)],
    );
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "evil", "s3_location": "evil.zip", "cmds": ["true"], "timeout": 10}]}"#,
    );
    let output = sandbox.run(&job, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("order 0001 (evil)") && stderr.contains("escapes the archive"),
        "{stderr}"
    );
}

#[test]
fn a_code_folder_link_leaving_it_is_refused() {
    let sandbox = Sandbox::new();
    let code = sandbox.path().join("code");
    std::fs::create_dir(&code).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", code.join("passwd")).unwrap();
    let job = sandbox.write_job(
        "job.json",
        r#"{"orders": [{"order_name": "linky", "code_dir": "code", "cmds": ["cat passwd"], "timeout": 10}]}"#,
    );
    let output = sandbox.run(&job, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("order 0001 (linky)") && stderr.contains("outside the code folder"),
        "{stderr}"
    );
}

#[test]
fn a_stripped_copy_has_the_code_but_no_env_and_neither_a_callback_url() {
    use std::io::Read;
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.path().join("app")).unwrap();
    std::fs::write(sandbox.path().join("app/run.sh"), "echo run").unwrap();
    let job = |stripped: bool| {
        format!(
            r#"{{"stripped_copy": {stripped}, "orders": [{{"code_dir": "app", "cmds": ["sh run.sh"], "timeout": 10, "env_vars": {{"API_TOKEN": "tok-0123456789"}}}}]}}"#
        )
    };
    let entries = |path: &Path| -> Vec<(String, Vec<u8>)> {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
        (0..zip.len())
            .map(|i| {
                let mut entry = zip.by_index(i).unwrap();
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                (entry.name().unwrap().into_owned(), bytes)
            })
            .collect()
    };

    let output = sandbox.run(&sandbox.write_job("job.json", &job(true)), &[]);
    let done = done_of(&output);
    assert_eq!(done.status, JobStatus::Succeeded);
    let bundle =
        |run_id: &str, name: &str| sandbox.object_path(&format!("tmp/exec/{run_id}/0001/{name}"));
    let full = entries(&bundle(&done.run_id, "exec.zip"));
    let stripped = entries(&bundle(&done.run_id, "exec-stripped.zip"));
    let names =
        |list: &[(String, Vec<u8>)]| list.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert!(names(&full).contains(&"env.json.age".to_owned()));
    assert!(!names(&stripped).contains(&"env.json.age".to_owned()));
    assert!(names(&stripped).contains(&"code/run.sh".to_owned()));
    assert!(names(&stripped).contains(&"env_vars.env".to_owned()));
    let manifest = |list: &[(String, Vec<u8>)]| -> serde_json::Value {
        serde_json::from_slice(&list.iter().find(|(n, _)| n == "order.json").unwrap().1).unwrap()
    };
    // Callback URLs are minted per attempt at dispatch: no bundle carries one that whoever
    // reads the bundle could report through.
    for list in [&full, &stripped] {
        assert_eq!(manifest(list).get("callback_url"), None);
        assert_eq!(manifest(list)["order_num"], "0001");
    }

    let output = sandbox.run(&sandbox.write_job("job.json", &job(false)), &[]);
    let done = done_of(&output);
    assert!(bundle(&done.run_id, "exec.zip").is_file());
    assert!(!bundle(&done.run_id, "exec-stripped.zip").exists());
}
