//! Golden tests for request translation.
//!
//! - `tests/golden/request/<direction>/<case>/in.json` translated must equal `out.json` (compared as
//!   parsed JSON, never as strings);
//!   `dropped.txt` beside them lists the paths translation reports as dropped, one a line (no file:
//!   none);
//! - `tests/golden/request/<direction>/errors/<case>.json` must fail, naming the parameter stored in
//!   the sibling `<case>.param`; `strict_errors/` the same with `params: strict`.
//!
//! `UPDATE_GOLDEN=1` rewrites the out files (pretty-printed); read every rewritten file and check
//! it against the mapping rules before committing it.

use std::fs;
use std::path::{Path, PathBuf};

use cheapmodel::dialect::{request, RequestOptions, TranslateError, Translated};
use serde_json::Value;

const OPTS: RequestOptions<'static> = RequestOptions {
    upstream_model: "upstream-model",
    default_max_tokens: 4096,
    strict: false,
    structured_outputs: true,
};

const STRICT: RequestOptions<'static> = RequestOptions { strict: true, ..OPTS };

type Translate = fn(&[u8], &RequestOptions<'_>) -> Result<Translated, TranslateError>;

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    entries
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Runs every case of one direction; returns (translated cases, error cases).
fn run(direction: &str, translate: Translate) -> (usize, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/request").join(direction);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let (mut ok_cases, mut error_cases) = (0, 0);

    for case in sorted_entries(&root) {
        let name = case.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if !case.is_dir() || name == "errors" || name == "strict_errors" {
            continue;
        }
        let input = fs::read(case.join("in.json")).unwrap_or_else(|e| panic!("{}/in.json: {e}", case.display()));
        let (got, dropped) = match translate(&input, &OPTS) {
            Ok(out) => (
                serde_json::from_slice::<Value>(&out.body)
                    .unwrap_or_else(|e| panic!("{name}: output is not JSON: {e}")),
                out.dropped,
            ),
            Err(e) => {
                failures.push(format!("{direction}/{name}: translation failed: {e:?}"));
                continue;
            }
        };
        let out = case.join("out.json");
        let dropped_file = case.join("dropped.txt");
        if update {
            let pretty = serde_json::to_string_pretty(&got).expect("serializes") + "\n";
            fs::write(&out, pretty).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
            if dropped.is_empty() {
                let _ = fs::remove_file(&dropped_file);
            } else {
                fs::write(&dropped_file, dropped.join("\n") + "\n")
                    .unwrap_or_else(|e| panic!("{}: {e}", dropped_file.display()));
            }
        }
        let want_dropped: Vec<String> =
            fs::read_to_string(&dropped_file).unwrap_or_default().lines().map(str::to_owned).collect();
        if dropped != want_dropped {
            failures.push(format!("{direction}/{name}: dropped {dropped:?}, want {want_dropped:?}"));
        }
        let want = read_json(&out);
        if got != want {
            failures.push(format!(
                "{direction}/{name}: output differs\n  got:  {}\n  want: {}",
                serde_json::to_string(&got).unwrap_or_default(),
                serde_json::to_string(&want).unwrap_or_default()
            ));
        }
        ok_cases += 1;
    }

    for (dir, opts) in [("errors", &OPTS), ("strict_errors", &STRICT)] {
        error_cases += check_errors(direction, &root.join(dir), opts, translate, &mut failures);
    }

    assert!(failures.is_empty(), "{} golden failure(s):\n{}", failures.len(), failures.join("\n"));
    assert!(ok_cases >= 12, "{direction}: only {ok_cases} translation cases");
    assert!(error_cases >= 12, "{direction}: only {error_cases} error cases");
    (ok_cases, error_cases)
}

/// Every `<case>.json` in `dir` must fail with the param in `<case>.param`; returns the count.
fn check_errors(
    direction: &str,
    dir: &Path,
    opts: &RequestOptions<'_>,
    translate: Translate,
    failures: &mut Vec<String>,
) -> usize {
    if !dir.is_dir() {
        return 0;
    }
    let mut error_cases = 0;
    for file in sorted_entries(dir) {
        if file.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = file.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let param_file = file.with_extension("param");
        let want = fs::read_to_string(&param_file).unwrap_or_else(|e| panic!("{}: {e}", param_file.display()));
        let input = fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        match translate(&input, opts) {
            Ok(out) => failures.push(format!(
                "{direction}/{}/{name}: expected an error, got {}",
                dir.display(),
                String::from_utf8_lossy(&out.body)
            )),
            Err(e) if e.param != want.trim() => failures.push(format!(
                "{direction}/{}/{name}: param {:?} (message {:?}), want {:?}",
                dir.display(),
                e.param,
                e.message,
                want.trim()
            )),
            Err(e) => assert!(!e.message.is_empty(), "{direction}/{}/{name}: empty message", dir.display()),
        }
        error_cases += 1;
    }
    error_cases
}

#[test]
fn openai_to_anthropic() {
    let (ok, errors) = run("openai_to_anthropic", request::openai_to_anthropic);
    eprintln!("openai_to_anthropic: {ok} translation cases, {errors} error cases");
}

#[test]
fn anthropic_to_openai() {
    let (ok, errors) = run("anthropic_to_openai", request::anthropic_to_openai);
    eprintln!("anthropic_to_openai: {ok} translation cases, {errors} error cases");
}
